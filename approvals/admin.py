"""The review queue: reviewers see their work, most urgent first (approvals.admin_inbox), and decide it.

Every button here calls the same service functions as the API; the admin only translates.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html

from approvals import admin_oversight, inbox, info_requests, integrations, masking, operations, services, steps
from approvals.admin_inbox import AgentFilter, DecisionPageMixin, InboxChangeList, InboxMixin, OutcomeFilter, QueueFilter
from approvals.models import ApiKey, Integration, Proposal, ReviewTask, Status
from approvals import rollback
from hitlgov.governed_admin import GovernedAdmin, version_rows
from ledger import categories

OPERATOR_ERRORS = (ValidationError, PermissionDenied, services.NotReviewable, operations.OperationRefused,
                   ValueError, Proposal.DoesNotExist)


def _message_for(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{field}: {', '.join(errors)}" for field, errors in exc.message_dict.items())
    return str(exc)


@admin.register(Proposal)
class ProposalAdmin(InboxMixin, DecisionPageMixin, GovernedAdmin):
    """The inbox and the decision page (approvals.admin_inbox), and the operator's buttons."""

    list_display = ["agent", "amount_display", "status"]  # the inbox's columns: InboxMixin.get_list_display
    list_filter = [QueueFilter, "status", OutcomeFilter, "connector", AgentFilter]
    search_fields = ["agent", "action", "target_id", "idempotency_key", "rationale"]
    actions = ["approve_selected", "reject_selected", "rollback_selected"]
    change_form_template = "admin/approvals/proposal/change_form.html"
    history_list_display = ["status", "status_reason"]
    OPERATOR_ERRORS = OPERATOR_ERRORS
    message_for = staticmethod(_message_for)

    def get_queryset(self, request):
        if request.GET.get("queue") == "mine" and not self.sees_everything(request):
            # My work is a subset of what a reviewer may see: its own indexed filter stands in for the semi-join.
            return self.all_proposals(request).filter(inbox.may_decide_q(request.user))
        return self.visible(request)

    def get_changelist(self, request, **kwargs):
        return InboxChangeList

    def has_add_permission(self, request):
        return False  # proposals come from integrations

    def has_delete_permission(self, request, obj=None):
        return False  # the audit trail keeps every proposal

    def has_change_permission(self, request, obj=None):
        return False  # changes go through the decision form, never a raw edit

    @admin.display(description="amount", ordering="amount")
    def amount_display(self, proposal: Proposal) -> str:
        return f"{proposal.amount} {proposal.currency}" if proposal.amount is not None else "-"

    def history_rows(self, request, version):
        """A past version with sensitive values masked for people without approvals.see_sensitive."""
        if masking.may_see(request.user):
            return super().history_rows(request, version)
        hidden = masking.sensitive_fields(version)
        return version_rows(version, mask=lambda name, value: masking.mask_field(name, value, hidden))

    def has_operate_permission(self, request) -> bool:
        return operations.is_operator(request.user)

    def get_urls(self):
        decide = self.admin_site.admin_view(self.decide_view)
        operate = self.admin_site.admin_view(self.operate_view)
        return [
            path("<uuid:pk>/decide/", decide, name="approvals_proposal_decide"),
            path("<uuid:pk>/operate/", operate, name="approvals_proposal_operate"),
            path("<uuid:pk>/oversight/", self.admin_site.admin_view(self.oversight_view), name="approvals_proposal_oversight"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        proposal = get_object_or_404(self._decision_page_reads(request), pk=object_id)
        request._decision_proposal = proposal  # get_object's, below: the admin's form shows the same row
        task = _active_tier(proposal) if proposal.status == Status.PENDING_REVIEW else None
        claim_refusal = operations.claim_refusal(proposal, request.user)
        can_decide = bool(task and services.can_review(task, request.user)) and not claim_refusal
        inbox_context = self.decision_context(request, proposal, can_decide)
        context = {
            **(extra_context or {}),
            **inbox_context,
            "proposal": proposal,
            "decision": proposal.decision or {},
            "tasks": proposal.review_tasks.all(),
            "executions": proposal.executions.all(),
            "can_decide": can_decide,
            "approve_refusal": services.four_eyes_refusal(proposal, task, request.user) if task else "",
            "can_release": (proposal.status in (Status.TRIAGE, Status.STALE) and not claim_refusal
                            and request.user.has_perm("approvals.operate_proposal")),
            "claim_refusal": claim_refusal,
            "active_task": task,
            "changes_json": json.dumps(inbox_context["masked_changes"], indent=2, sort_keys=True),
            "decide_url": reverse("admin:approvals_proposal_decide", args=[proposal.pk]),
            "operate_url": reverse("admin:approvals_proposal_operate", args=[proposal.pk]),
            "ops": _operator_buttons(proposal, request.user),
            "thread": masking.mask_thread(operations.thread(proposal), inbox_context["hidden_fields"]),
            # Sorted here: ordered in SQL, a planner may walk the whole created_at index to find a few branches.
            "branches": sorted(proposal.branches.all(), key=lambda child: child.created_at),
            "exception_categories": categories.vocabulary().items(),
            "oversight": getattr(proposal, "oversight", None),  # None when it has no alert or after-the-fact review
            "oversight_ops": admin_oversight.buttons(proposal, request.user),
            "oversight_url": reverse("admin:approvals_proposal_oversight", args=[proposal.pk]),
            "six_steps": steps.six_steps(proposal),
        }
        return super().change_view(request, object_id, form_url, context)

    def _decision_page_reads(self, request):
        """The proposal with what its page shows of its tiers, reviews, executions, branches and oversight task,
        read once: the page, its six steps, its thread and its oversight buttons each read them again before."""
        tiers = ReviewTask.objects.select_related("group", "escalation_group").prefetch_related("reviews__reviewer")
        return (self.get_queryset(request)
                .select_related("claimed_by", "parent", "oversight__group", "oversight__escalation_group")
                # Branches unordered: ordered in SQL, a planner may walk the whole created_at index to find a few.
                .prefetch_related(Prefetch("review_tasks", queryset=tiers), "executions",
                                  Prefetch("branches", queryset=Proposal.objects.order_by())))

    def get_object(self, request, object_id, from_field=None):
        """The decision page's proposal as change_view read it, not read again for the admin's form."""
        proposal = getattr(request, "_decision_proposal", None)
        if proposal is not None and from_field is None and str(proposal.pk) == str(object_id):
            return proposal
        return super().get_object(request, object_id, from_field)

    def oversight_view(self, request, pk):
        """Dismiss, act on or escalate an alert; confirm or roll back on-the-loop work (approvals.oversight)."""
        get_object_or_404(self.get_queryset(request), pk=pk)
        return admin_oversight.oversight_view(request, pk)

    def decide_view(self, request, pk):
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:approvals_proposal_change", args=[pk]))
        get_object_or_404(self.get_queryset(request), pk=pk)
        verdict, reason = request.POST.get("verdict", ""), request.POST.get("reason", "")
        try:
            self._decide(request, pk, verdict, reason)
        except OPERATOR_ERRORS as exc:
            messages.error(request, f"Not recorded: {_message_for(exc)}")
            return HttpResponseRedirect(reverse("admin:approvals_proposal_change", args=[pk]))
        messages.success(request, "Asked the agent; review waits for its answer." if verdict == "ask" else f"Recorded: {verdict}.")
        return self.after_verdict(request, pk)

    def operate_view(self, request, pk):
        """Operator buttons: each POST names one operation and goes to approvals.operations or
        approvals.rollback; refusals come back as messages on the proposal page."""
        back = HttpResponseRedirect(reverse("admin:approvals_proposal_change", args=[pk]))
        if request.method != "POST":
            return back
        get_object_or_404(self.get_queryset(request), pk=pk)
        op = request.POST.get("op", "")
        try:
            if op not in OPERATIONS:
                raise ValueError(f"unknown operation {op!r}")
            message, goto = OPERATIONS[op](request, pk)
        except OPERATOR_ERRORS as exc:
            messages.error(request, f"Not done: {_message_for(exc)}")
            return back
        messages.success(request, message)
        return HttpResponseRedirect(reverse("admin:approvals_proposal_change", args=[goto])) if goto else back

    def _decide(self, request, pk, verdict: str, reason: str) -> None:
        if verdict == "release":
            operations.send_to_review(pk, request.user, reason)
        elif verdict == "reject_held":
            services.reject_held(pk, request.user, reason)
        elif verdict == "ask":
            info_requests.request_info(pk, request.user, reason)
        elif verdict == "edit":
            services.record_verdict(pk, request.user, "approve", reason, changes=_parse_changes(request.POST.get("changes", "")),
                                    category=request.POST.get("category", ""))
        else:
            services.record_verdict(pk, request.user, verdict, reason, category=request.POST.get("category", ""))

    @admin.action(description="Approve selected (tiers that allow bulk approval)")
    def approve_selected(self, request, queryset):
        self._bulk(request, queryset, "approve", reason="bulk approval")

    @admin.action(description="Reject selected (asks for a reason)")
    def reject_selected(self, request, queryset):
        reason = request.POST.get("reason", "").strip()
        if not reason:
            return render(request, "admin/approvals/proposal/reject_reason.html", {
                "proposals": queryset, "action": "reject_selected", "opts": self.model._meta,
                "title": "Reject proposals",
            })
        self._bulk(request, queryset, "reject", reason=reason)

    @admin.action(description="Roll back selected (executed ones; asks for a reason)", permissions=["operate"])
    def rollback_selected(self, request, queryset):
        reason = request.POST.get("reason", "").strip()
        if not reason:
            return render(request, "admin/approvals/proposal/rollback_reason.html", {
                "proposals": queryset, "action": "rollback_selected", "opts": self.model._meta,
                "title": "Roll back proposals",
            })
        try:
            batch = rollback.start_batch(request.user, reason, proposal_ids=[str(p.pk) for p in queryset])
        except OPERATOR_ERRORS as exc:
            messages.error(request, f"Nothing rolled back: {_message_for(exc)}")
            return None
        left_out = queryset.count() - batch.total
        messages.success(request, f"Rollback batch #{batch.pk} queued for {batch.total} executed proposal(s)"
                                  + (f"; {left_out} not executed, left out" if left_out else "") + ".")
        return HttpResponseRedirect(reverse("admin:connectors_rollbackbatch_change", args=[batch.pk]))


def _parse_changes(text: str) -> dict:
    try:
        changes = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError({"changes": f"not valid JSON: {exc.msg} at line {exc.lineno}"}) from None
    if not isinstance(changes, dict):
        raise ValidationError({"changes": "must be a JSON object of field to new value"})
    return changes


def _active_tier(proposal: Proposal):
    """The active tier among the tiers the decision page read with the proposal (at most one is active).
    What it shows only: a verdict asks approvals.services afresh."""
    return next((tier for tier in proposal.review_tasks.all() if tier.state == ReviewTask.State.ACTIVE), None)


def _operator_buttons(proposal: Proposal, user) -> dict[str, bool]:
    """Which operator buttons the proposal page shows; the operations re-check everything."""
    if not operations.is_operator(user):
        return {}
    steerable = proposal.status in operations.CLAIMABLE
    mine = steerable and proposal.claimed_by_id == user.pk
    return {
        "take_over": steerable and not proposal.claimed_by_id,
        "release": steerable and bool(proposal.claimed_by_id),
        "execute_edited": mine,
        "handled_manually": mine and not proposal.manual_requested_by_id,
        "confirm_manual": steerable and bool(proposal.manual_requested_by_id) and proposal.manual_requested_by_id != user.pk,
        "retry": proposal.status == Status.FAILED and not operations.claim_refusal(proposal, user),
        "rollback": proposal.status in (Status.EXECUTED, Status.DRY_RUN),
        "branch": proposal.status != Status.EXECUTING and not operations.claim_refusal(proposal, user),
    }


def _reason(request) -> str:
    return request.POST.get("reason", "")


def _op_execute_edited(request, pk):
    proposal = operations.execute_edited(pk, request.user, _parse_changes(request.POST.get("changes", "")), _reason(request))
    if proposal.status == Status.PENDING_REVIEW:
        return "Edited change recorded: another reviewer must approve it before it runs.", None
    return f"Edited change recorded; the policy sent it to {proposal.status}: {proposal.status_reason}", None


def _op_handled_manually(request, pk):
    proposal = operations.handle_manually(pk, request.user, _reason(request))
    if proposal.status == Status.HANDLED_MANUALLY:
        return "Recorded as handled manually.", None
    return "Asked to close this by hand: it was not approved as it stands, so a second operator must confirm.", None


def _simple(operation, message: str):
    """An operator button that takes only a reason and says one thing when done."""
    def run(request, pk):
        operation(pk, request.user, _reason(request))
        return message, None

    return run


def _op_rollback(request, pk):
    result = rollback.rollback_proposal(pk, request.user, _reason(request))
    if result.needs_manual:
        raise operations.OperationRefused(f"rollback {result.outcome}: {result.message}")
    return f"Rolled back. {result.message}", None


def _op_branch(request, pk):
    new = operations.branch(pk, request.user, _parse_changes(request.POST.get("changes", "")), _reason(request))
    return f"Branch created: {new.status}.", new.pk


OPERATIONS = {
    "take_over": _simple(operations.take_over, "Taken over: verdicts by others are refused until you release it."),
    "release": _simple(operations.release, "Released: review continues."),
    "handled_manually": _op_handled_manually,
    "confirm_manual": _simple(operations.confirm_manual_handling, "Confirmed: closed by hand, recorded as break glass."),
    "retry": _simple(operations.retry, "Execution retried."),
    "execute_edited": _op_execute_edited, "rollback": _op_rollback, "branch": _op_branch,
}


class ApiKeyRevokeForm(forms.ModelForm):
    revoke = forms.BooleanField(required=False, help_text="Revoke this key now (it cannot be undone)")

    class Meta:
        model = ApiKey
        fields: list[str] = []  # nothing of a key is edited; it is only revoked


class ApiKeyInline(admin.TabularInline):
    """Keys are listed read-only; ticking "revoke" goes to approvals.integrations.revoke_key."""

    model = ApiKey
    form = ApiKeyRevokeForm
    extra = 0
    fields = ["prefix", "scopes", "created_at", "last_used_at", "revoked_at", "revoke"]
    readonly_fields = ["prefix", "scopes", "created_at", "last_used_at", "revoked_at"]
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False  # keys are made with the "Create an API key" action, which shows the secret once

    def get_fields(self, request, obj=None):
        writable = self.has_change_permission(request, obj)
        return self.fields if writable else [name for name in self.fields if name != "revoke"]


class IntegrationForm(forms.ModelForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 80}),
                             help_text="Why this change: kept in the integration's history")

    class Meta:
        model = Integration
        fields = sorted(integrations.EDITABLE_FIELDS)


@admin.register(Integration)
class IntegrationAdmin(GovernedAdmin):
    """Every save goes to approvals.integrations with the reason given; integrations are deactivated, never deleted."""

    form = IntegrationForm
    list_display = ["name", "acts_for", "active", "key_count"]
    inlines = [ApiKeyInline]
    actions = ["create_key"]

    @admin.display(description="keys")
    def key_count(self, integration: Integration) -> int:
        return integration.keys.filter(revoked_at__isnull=True).count()

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        writable = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
        return fields if writable else [name for name in fields if name != "reason"]

    def has_delete_permission(self, request, obj=None):
        return False  # proposals point at it: set active off instead

    def save_model(self, request, obj, form, change):
        names = form.changed_data if change else form.cleaned_data
        fields = {name: form.cleaned_data[name] for name in names if name in integrations.EDITABLE_FIELDS}
        if change and not fields:
            return  # only keys changed (save_formset); an empty history row would say nothing
        reason = form.cleaned_data["reason"]
        saved = (integrations.update_integration(obj.pk, request.user, fields, reason) if change
                 else integrations.create_integration(request.user, fields, reason))
        obj.pk = saved.pk

    def save_formset(self, request, form, formset, change):
        """Only the keys' revoke boxes can change anything, and each goes to the service."""
        formset.save(commit=False)  # saves nothing; fills in what the admin's change message reads
        for key_form in formset.forms:
            if key_form.cleaned_data.get("revoke"):
                integrations.revoke_key(key_form.instance.pk, request.user, form.cleaned_data["reason"])

    @admin.action(description="Create an API key (proposals:write, proposals:read)", permissions=["add_key"])
    def create_key(self, request, queryset):
        for integration in queryset:
            try:
                _, raw = integrations.issue_key(integration.pk, request.user, ["proposals:write", "proposals:read"])
            except (ValidationError, PermissionDenied) as exc:
                messages.error(request, f"No key for {integration.name}: {_message_for(exc)}")
                continue
            messages.warning(request, format_html("New key for {}: <code>{}</code> (shown once; copy it now)", integration.name, raw))

    def has_add_key_permission(self, request) -> bool:
        return request.user.has_perm("approvals.add_apikey")
