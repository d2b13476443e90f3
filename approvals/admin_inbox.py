"""The reviewer's inbox in the admin: queues with counts, rows that say what changes and how urgent it is,
a decision page with the actions on top, "and next", the agent's record and the record's other proposals.

ProposalAdmin (approvals.admin) mixes these in; the queries live in approvals.inbox, masking in
approvals.masking. Nothing here writes a proposal except through approvals.inbox.hold and the
service functions the admin already calls.
"""

from __future__ import annotations

from collections import Counter
from functools import cached_property

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.translation import gettext

from approvals import inbox, masking, services
from approvals.models import Proposal, Status

# The list's pages reach as far as a tab counts (20 pages of the most urgent work; narrow with a queue, filter
# or search beyond it), so a queue's list and its tab are one count. Counting the list to 10,000 was a
# quarter of my work's time at 1,000,000 proposals.
LIST_COUNT_CAP = inbox.COUNT_CAP


class QueueFilter(admin.SimpleListFilter):
    title = "queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [(queue.key, queue.label) for queue in inbox.queues_for(request.user)]

    def __init__(self, request, params, model, model_admin):
        super().__init__(request, params, model, model_admin)
        self.model_admin = model_admin

    def queryset(self, request, queryset):
        if self.value() == "mine" and not self.model_admin.sees_everything(request):
            return queryset  # ProposalAdmin.get_queryset narrowed it already; twice, SQLite's planner loses the indexes
        condition = inbox.queue_q(self.value() or "", request.user)
        return queryset.filter(condition) if condition is not None else queryset


class OutcomeFilter(admin.SimpleListFilter):
    """The policy's outcomes, listed from what the engine can decide: no DISTINCT over the table."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request, model_admin):
        return [(name, name) for name in ("auto", "review", "triage", "block")]

    def queryset(self, request, queryset):
        return queryset.filter(outcome=self.value()) if self.value() else queryset


class AgentFilter(admin.SimpleListFilter):
    """Agents seen in the newest proposals (a bounded read of the created_at index, not a DISTINCT scan)."""

    title = "agent"
    parameter_name = "agent"

    def lookups(self, request, model_admin):
        recent = Proposal.objects.order_by("-created_at").values_list("agent", flat=True)[:inbox.COUNT_CAP]
        return [(name, name) for name in sorted(set(recent))]

    def queryset(self, request, queryset):
        return queryset.filter(agent=self.value()) if self.value() else queryset


class CappedPaginator(Paginator):
    """Counts no further than LIST_COUNT_CAP + 1 rows: the page says "more than 10,000" instead of a full COUNT.
    The inbox's list hands it the count it took with the queue tabs' (`counted`)."""

    cap = LIST_COUNT_CAP

    def __init__(self, *args, counted: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.counted = counted

    @cached_property
    def count(self) -> int:
        return self.counted if self.counted is not None else inbox.capped_count(self.object_list, self.cap)

    def page(self, number):
        """A page in two steps: the page's ids in order (a sort of narrow rows), then those rows with their
        per-row data. One query sorting whole rows (changes, previews) was most of a page's time."""
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        ids = list(self.object_list.values_list("pk", flat=True)[bottom:bottom + self.per_page])
        # By primary key alone: with the list's filters repeated, SQLite's planner chose the status index.
        # Unordered (the model's default order would sort them again): the ids above give the order.
        rows = {row.pk: row for row in inbox.with_row_data(Proposal.objects.filter(pk__in=ids)).order_by()}
        return self._get_page([rows[pk] for pk in ids if pk in rows], number, self)


class InboxChangeList(ChangeList):
    """The list's rows carry their tier, approvals and holders from the one query (approvals.inbox.with_row_data):
    CappedPaginator.page's, or this queryset itself when the list is shown whole."""

    def get_results(self, request):
        """The queue tabs' counts and the list's own, in one statement (approvals.inbox.capped_counts)."""
        queues = self.model_admin.queue_querysets(request)
        *tabs, listed = inbox.capped_counts([(counted, inbox.COUNT_CAP) for _, counted in queues]
                                            + [(self._list_counted(request, queues), LIST_COUNT_CAP)])
        self.queue_counts = list(zip((queue for queue, _ in queues), tabs))
        request._inbox_list_count = listed  # for get_paginator, which the admin calls with the request only
        if listed <= self.list_per_page or (self.show_all and listed <= self.list_max_show_all):
            # Shown whole (as ChangeList.get_results decides), the list's rows are this queryset's. Paged, they are
            # CappedPaginator.page's, and building the row data's subqueries here was CPU spent on every page for
            # nothing but the counts and the ids.
            self.queryset = inbox.with_row_data(self.queryset)
        super().get_results(request)

    def _list_counted(self, request, queues) -> inbox.Counted:
        """What the list's own count counts: my work as its tab has it (no other filter, no search) is
        the tab's two conditions, counted apart (approvals.inbox.may_decide_apart); any other list, its queryset."""
        narrowed = self.query or any(spec.used_parameters for spec in self.filter_specs if not isinstance(spec, QueueFilter))
        if request.GET.get(QueueFilter.parameter_name) == "mine" and not narrowed:
            return next(counted for queue, counted in queues if queue.key == "mine")
        return self.queryset


class InboxMixin:
    """The changelist: land on the right queue, most urgent first, counts per queue, rows that answer at a glance."""

    paginator = CappedPaginator
    show_full_result_count = False
    list_per_page = 50
    change_list_template = "admin/approvals/proposal/inbox.html"

    class Media:
        css = {"all": ["approvals/inbox.css"]}
        js = ["approvals/inbox.js"]

    def all_proposals(self, request):
        # Not ModelAdmin.get_queryset: its ordering names the ranks, which must be aliased first.
        queryset = inbox.with_ranks(Proposal.objects.all()).order_by(*self.get_ordering(request))
        return queryset.select_related("connector", "integration")

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        return self.paginator(queryset, per_page, orphans, allow_empty_first_page,
                              counted=getattr(request, "_inbox_list_count", None))

    def queue_querysets(self, request):
        return inbox.queue_querysets(request.user, self.visible(request), self.all_proposals(request))

    def sees_everything(self, request) -> bool:
        return request.user.is_superuser or request.user.has_perm("approvals.operate_proposal")

    def visible(self, request):
        """What this person may see: operators and superusers everything, reviewers what their groups' tiers hold."""
        queryset = self.all_proposals(request)
        return queryset if self.sees_everything(request) else queryset.filter(inbox.visible_q(request.user))

    def get_ordering(self, request):
        """Queues of open work: most urgent first. "All": open before finished."""
        return list(inbox.OPEN_FIRST_ORDER if request.GET.get("queue") == "all" else inbox.URGENT_ORDER)

    # The proposal column links to the decision page itself (see get_list_display): the admin's own links
    # resolve the list's URL again for every row to carry its filters, a sixth of a page's time.
    list_display_links = None

    def get_list_display(self, request):
        now, hidden_for = timezone.now(), _hider(request.user)
        changelist = reverse("admin:approvals_proposal_changelist")
        filters = request.GET.urlencode()
        back = "?" + urlencode({"_changelist_filters": filters}) if filters else ""  # as the admin's links carry them

        @admin.display(description="proposal")
        def change(proposal):
            return format_html('<a href="{}{}/change/{}">{}</a>', changelist, proposal.pk, back,
                               inbox.one_line(proposal, hidden_for(proposal)))

        @admin.display(description="due", ordering="due_at")
        def due(proposal):
            text, overdue = inbox.due_text(proposal.due_at, now)
            if overdue:
                return format_html('<span class="due-overdue" title="past its SLA">&#9888; {}</span>', text)
            return text

        @admin.display(description="held by")
        def held(proposal):
            return inbox.holders(proposal, now) or "-"

        return [change, "confidence_band", "amount_display", "customer_impact", "agent", due, "waiting_for", held, "status"]

    def action_checkbox(self, obj):
        """The row's checkbox, the stock one's markup written out: the stock one renders a form widget's
        template for every row, a quarter of a page's time."""
        return format_html('<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
                           helpers.ACTION_CHECKBOX_NAME, obj.pk, gettext("Select this object for an action - {}").format(obj))

    @admin.display(description="confidence", ordering="confidence")
    def confidence_band(self, proposal: Proposal) -> str:
        return f"{inbox.confidence_band(proposal.confidence)} ({proposal.confidence:.2f})"

    @admin.display(description="waiting for")
    def waiting_for(self, proposal: Proposal) -> str:
        if proposal.status != Status.PENDING_REVIEW or not proposal.active_group_id:
            return "-"
        text = f"{proposal.active_group.name} ({proposal.tier_approvals or 0}/{proposal.tier_required or '?'})"
        if proposal.escalated_to_id:
            text += f", escalated to {proposal.escalated_to.name}"
        return text + (", bulk allowed" if proposal.tier_bulk else "")

    def changelist_view(self, request, extra_context=None):
        if "queue" not in request.GET and not request.GET.get("q"):
            query = request.GET.copy()
            query["queue"] = inbox.landing_queue(request.user)
            return HttpResponseRedirect(f"{request.path}?{query.urlencode()}")
        current = request.GET.get("queue", "")
        context = {
            **(extra_context or {}),
            "current_queue": current,
            "count_cap": inbox.COUNT_CAP,
        }
        return super().changelist_view(request, context)

    def get_actions(self, request):
        """Bulk approval only where the person's own work has a tier that allows it."""
        actions = super().get_actions(request)
        if "approve_selected" in actions and not self._bulk_possible(request):
            del actions["approve_selected"]
        return actions

    def _bulk_possible(self, request) -> bool:
        # Asked once per request: the changelist asks for its actions three times.
        if not hasattr(request, "_inbox_bulk_possible"):
            request._inbox_bulk_possible = inbox.bulk_possible(request.user)
        return request._inbox_bulk_possible

    def _bulk(self, request, queryset, verdict: str, reason: str) -> None:
        """Each item goes to services.record_verdict; what was left is summed up by reason, not a wall of warnings."""
        done, left = 0, Counter()
        for pk in queryset.values_list("pk", flat=True):
            try:
                services.record_verdict(pk, request.user, verdict, reason, bulk=verdict == "approve")
                done += 1
            except self.OPERATOR_ERRORS as exc:
                left[self.message_for(exc)] += 1
        if done:
            messages.success(request, f"{verdict.capitalize()}d {done} proposal(s).")
        if left:
            why = "; ".join(f"{count} because {reason}" for reason, count in left.most_common())
            messages.warning(request, f"Left {sum(left.values())} proposal(s) as they were: {why}.")


def _hider(user):
    """A function from proposal to the fields whose values this person may not see."""
    if masking.may_see(user):
        return lambda proposal: frozenset()
    return masking.sensitive_fields


class DecisionPageMixin:
    """What the decision page adds to the proposal page: a hold, the agent's record, the record's other
    proposals, "and next", and masked sensitive values."""

    def decision_context(self, request, proposal: Proposal, can_decide: bool) -> dict:
        now = timezone.now()
        held_by_other = inbox.hold(proposal.pk, request.user, now) if can_decide else ""
        hidden = frozenset() if masking.may_see(request.user) else masking.sensitive_fields(proposal)
        preview = masking.mask_preview(proposal.preview, hidden) if hidden else proposal.preview
        record = inbox.agent_record(proposal.agent, proposal.action, exclude=proposal.pk)
        due, overdue = inbox.due_text(proposal.due_at, now)
        return {
            "held_by_other": held_by_other,
            "hold_minutes": inbox.HOLD_MINUTES,
            "hidden_fields": sorted(hidden),
            "shown_preview": preview,
            "masked_changes": masking.mask_values(proposal.changes, hidden),
            "agent_record": record,
            "same_record": inbox.same_record(proposal),
            "confidence_band": inbox.confidence_band(proposal.confidence),
            "due_text": due, "overdue": overdue,
            "skip_to": inbox.next_for(request.user, self.all_proposals(request), after=proposal.pk, now=now) if can_decide else None,
        }

    def after_verdict(self, request, pk) -> HttpResponseRedirect:
        """Back to the list, or with "and next" straight to the most urgent next proposal of the person's work."""
        if request.GET.get("next") or request.POST.get("next"):
            following = inbox.next_for(request.user, self.all_proposals(request), after=pk)
            if following:
                return HttpResponseRedirect(reverse("admin:approvals_proposal_change", args=[following]))
            messages.info(request, "Nothing else is waiting for you.")
        return HttpResponseRedirect(reverse("admin:approvals_proposal_changelist"))
