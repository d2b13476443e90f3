"""The inbox of AI-assisted alerts and the after-the-fact review queue of on-the-loop work.

The list is each person's queue (their groups', or everything for operators); the buttons sit on
the proposal page and post to `oversight_view`, which only translates into `approvals.oversight`.
Registered from ApprovalsConfig.ready(), like the other admin modules.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from approvals import oversight
from approvals.models import OversightTask, Proposal, Status
from hitlgov.governed_admin import GovernedAdmin

OPERATIONS = {
    "dismiss": lambda request, pk: (oversight.dismiss(pk, request.user, _text(request)), "Dismissed."),
    "mark_done": lambda request, pk: (oversight.mark_done(pk, request.user, _text(request)), "Marked as acted on."),
    "escalate": lambda request, pk: (oversight.escalate(pk, request.user, _text(request)), "Escalated."),
    "confirm": lambda request, pk: (oversight.confirm(pk, request.user, _text(request)), "Confirmed."),
    "roll_back": lambda request, pk: _roll_back(request, pk),
}


def _text(request) -> str:
    return request.POST.get("reason", "")


def _roll_back(request, pk):
    result = oversight.roll_back(pk, request.user, _text(request))
    if result.needs_manual:
        raise oversight.NotReviewable(f"rollback {result.outcome}: {result.message}")
    return result, f"Rolled back. {result.message}"


def visible_q(user) -> Q:
    """Proposals whose alert or after-the-fact review is for one of the user's groups (for ProposalAdmin)."""
    groups = list(user.groups.values_list("pk", flat=True))
    return Q(oversight__group__in=groups) | Q(oversight__escalation_group__in=groups, oversight__state="escalated")


def buttons(proposal: Proposal, user) -> dict[str, bool]:
    """Which oversight buttons the proposal page shows; the operations check everything again."""
    task = getattr(proposal, "oversight", None)  # None: no alert or after-the-fact review
    if task is None or not task.is_open or not oversight.may_act(task, user):
        return {}
    if task.kind == OversightTask.Kind.ALERT:
        return {"dismiss": True, "mark_done": True,
                "escalate": task.state == OversightTask.State.OPEN and task.escalation_group_id is not None}
    ran = proposal.status in oversight.RAN
    return {"confirm": ran, "roll_back": ran}


def oversight_view(request, pk):
    """POST one of OPERATIONS for the proposal; refusals come back as messages on its page."""
    from approvals.admin import OPERATOR_ERRORS, _message_for  # the proposal admin's error handling

    back = HttpResponseRedirect(reverse("admin:approvals_proposal_change", args=[pk]))
    if request.method != "POST":
        return back
    op = request.POST.get("op", "")
    try:
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}")
        _, message = OPERATIONS[op](request, pk)
    except (*OPERATOR_ERRORS, OversightTask.DoesNotExist) as exc:
        messages.error(request, f"Not done: {_message_for(exc)}")
        return back
    messages.success(request, message)
    return back


class OpenFilter(admin.SimpleListFilter):
    title = "to do"
    parameter_name = "todo"

    def lookups(self, request, model_admin):
        return [("open", "Waiting for someone"), ("done", "Decided")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(state__in=[OversightTask.State.OPEN, OversightTask.State.ESCALATED])
        if self.value() == "done":
            return queryset.exclude(state__in=[OversightTask.State.OPEN, OversightTask.State.ESCALATED])
        return queryset


@admin.register(OversightTask)
class OversightTaskAdmin(GovernedAdmin):
    """Alerts (dismiss, act, escalate) and on-the-loop work to confirm or roll back: each person's queue.
    Read-only: decisions are the buttons on the proposal page (approvals.oversight), with history kept."""

    list_display = ["created_at", "proposal_link", "kind", "group", "state", "proposal_status", "decided_by"]
    list_filter = [OpenFilter, "kind", "state", "group"]
    list_select_related = ["proposal", "proposal__connector", "group", "decided_by"]
    fields = ["proposal", "kind", "group", "escalation_group", "state", "decided_by", "decided_at", "reason", "created_at"]
    readonly_fields = fields

    def get_queryset(self, request):
        queryset = super().get_queryset(request)
        if request.user.is_superuser or request.user.has_perm("approvals.operate_proposal"):
            return queryset
        groups = list(request.user.groups.values_list("pk", flat=True))
        return queryset.filter(Q(group__in=groups) | Q(escalation_group__in=groups, state=OversightTask.State.ESCALATED))

    def has_add_permission(self, request) -> bool:
        return False  # the policy opens them

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="proposal")
    def proposal_link(self, task: OversightTask) -> str:
        url = reverse("admin:approvals_proposal_change", args=[task.proposal_id])
        return format_html('<a href="{}">{}</a>', url, task.proposal)

    @admin.display(description="proposal status")
    def proposal_status(self, task: OversightTask) -> str:
        return Status(task.proposal.status).label
