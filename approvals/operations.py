"""What operators do when a proposal needs a human hand: take it over, fix it, run it or record
that they did it by hand; retry a failed run; branch a new proposal off an old one.

Choices, and why:
- Take over is for proposals an operator can still steer: pending_review, triage, stale or
  failed. While a proposal is claimed its review is paused (the active tier goes back to
  waiting, its SLA stops), so every verdict path (admin, bulk, API) finds no tier to decide
  and is refused; the admin names who holds it. Release reactivates the tier with a fresh SLA.
- Execute edited change reuses the edit from `approvals.services`: the edit is previewed,
  hashed and decided by the policy again, with the operator's group as the floor tier. Four
  eyes hold: the operator never approves their own edit, so the claim is released and the
  proposal waits for the policy's reviewers, or a second operator on the floor tier; a
  take-over never skips a tier the policy requires. Once approved, `approved_hash` is the
  edited change's hash, so the executor's hash check passes for exactly that change.
- Handled manually ends the proposal `handled_manually` (never `executed`: nothing was written
  through the connector), with an Execution row (kind execute, outcome manual) and
  status_reason "handled manually by X: reason"; a rollback refuses it. Work not approved as it
  stands needs a second operator's confirmation, recorded as a break-glass event.
- A branch is a new proposal (parent = the original, same integration and agent, idempotency
  key "<original key>:branch:<n>") decided by the policy from scratch. If the original is still
  open (pending_review, triage, stale, approved or failed) it is cancelled as superseded in the
  same transaction, so the two can never both be written; a closed original stays as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from approvals import lifecycle, services
from approvals.lifecycle import CLAIMABLE, claim_refusal  # noqa: F401  (the admin reads them here)
from approvals.models import BreakGlass, Proposal, ReviewTask, Status
from connectors.models import Execution
from policies import engine

SUPERSEDED_BY_BRANCH = (Status.PENDING_REVIEW, Status.TRIAGE, Status.STALE, Status.APPROVED, Status.FAILED)
OPERATE_PERMISSION = "approvals.operate_proposal"


class OperationRefused(Exception):
    """The operation does not apply to the proposal as it is now; the message says why."""


def is_operator(user) -> bool:
    return bool(user and user.is_active and user.has_perm(OPERATE_PERMISSION))


def check_operator(user) -> None:
    if not is_operator(user):
        raise PermissionDenied("only operators (approvals.operate_proposal) can do this")


def _require_reason(reason: str, why: str) -> None:
    if not reason.strip():
        raise ValidationError({"reason": why})


def _check_holder(proposal: Proposal, user) -> None:
    """Only the operator holding the claim may edit-and-execute or close a proposal by hand."""
    if proposal.status not in CLAIMABLE:
        raise OperationRefused(f"a proposal that is {proposal.status} cannot be operated on this way")
    if proposal.claimed_by_id != user.pk:
        holder = proposal.claimed_by.get_username() if proposal.claimed_by_id else "nobody"
        raise OperationRefused(f"take the proposal over first (it is held by {holder})")


def _name(user) -> str:
    return user.get_username()


# ---- take over / release -------------------------------------------------------------------

def take_over(proposal_id: Any, user, reason: str = "") -> Proposal:
    """Claim a proposal: from now on only this operator acts on it, and its review is paused.

    The integration's own user may not: holding the claim lets one approve an edited change,
    and an agent never decides its own proposal.
    """
    check_operator(user)
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if proposal.status not in CLAIMABLE:
            raise OperationRefused(f"a proposal that is {proposal.status} cannot be taken over")
        if proposal.integration.acts_for_id == user.pk:
            raise PermissionDenied("the submitting agent's user cannot take over its own proposal")
        if proposal.claimed_by_id == user.pk:
            return proposal
        if proposal.claimed_by_id:
            raise OperationRefused(f"already taken over by {proposal.claimed_by.get_username()}")
        proposal.claimed_by = user
        _pause_review(proposal)
        proposal._history_user = user
        proposal._change_reason = f"taken over by {_name(user)}" + (f": {reason}" if reason else "")
        proposal.save()
    return proposal


def _pause_review(proposal: Proposal) -> None:
    proposal.review_tasks.filter(state=ReviewTask.State.ACTIVE).update(state=ReviewTask.State.WAITING, due_at=None)
    lifecycle.mark_active_tier(proposal, None)  # out of every reviewer's inbox while the operator holds it


def release(proposal_id: Any, user, reason: str = "") -> Proposal:
    """Give a claimed proposal back: review resumes where it paused, with a fresh SLA.

    Any operator may release, so a claim never outlives the person who made it.
    """
    check_operator(user)
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if not proposal.claimed_by_id:
            raise OperationRefused("the proposal is not taken over")
        holder = proposal.claimed_by.get_username()
        _drop_claim(proposal)
        proposal._history_user = user
        by = "" if holder == _name(user) else f" (held by {holder})"
        proposal._change_reason = f"released by {_name(user)}{by}" + (f": {reason}" if reason else "")
        proposal.save()
    return proposal


def _drop_claim(proposal: Proposal) -> None:
    proposal.claimed_by = None
    proposal.manual_requested_by, proposal.manual_request_reason = None, ""  # a request ends with the claim
    if proposal.status == Status.PENDING_REVIEW and lifecycle.active_task(proposal) is None:
        lifecycle.activate_next_tier(proposal)


def send_to_review(proposal_id: Any, user, reason: str) -> Proposal:
    """An operator releases a held proposal to reviewers (services.send_to_review, which also ends
    the operator's own claim so the new tiers can be decided)."""
    check_operator(user)
    try:
        return services.send_to_review(proposal_id, user, reason)
    except services.NotReviewable as exc:
        raise OperationRefused(str(exc)) from None


# ---- execute an edited change / handled manually / retry -------------------------------------

def execute_edited(proposal_id: Any, user, changes: dict, reason: str) -> Proposal:
    """The claiming operator fixes the planned change and puts it through the policy again.

    Four eyes hold here too: the operator never approves their own edit. Returns the proposal
    `pending_review` (the policy's tiers, at least a second operator; the claim is released to
    them) or `triage`/`blocked` as the policy says.
    """
    check_operator(user)
    _require_reason(reason, "say why you are executing this change")
    edit = services.read_edit(proposal_id, changes)  # reads the live record: outside the transaction
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        _check_holder(proposal, user)
        was_edited, changed = proposal.edited, edit[0] != proposal.changes
        proposal._history_user = user
        if proposal.status != Status.PENDING_REVIEW:
            proposal.reopen_for_operator()
            proposal._change_reason = f"taken into review by {_name(user)} to execute an edited change: {reason}"
            proposal.save()
        floor = engine.Tier(group=_operator_group(user).name, sla_minutes=lifecycle.floor_tiers()[0].sla_minutes)
        services.apply_edit(proposal, floor, edit, user)
        _settle_after_edit(proposal, user, edited=was_edited or changed)
    return proposal


def _operator_group(user) -> Group:
    """The group that makes this user an operator: a colleague of it confirms their edit."""
    for group in user.groups.all():
        if group.permissions.filter(content_type__app_label="approvals", codename="operate_proposal").exists():
            return group
    return Group.objects.get_or_create(name="operators")[0]


def _settle_after_edit(proposal: Proposal, user, *, edited: bool) -> None:
    """An unchanged change is not an override; tiers the operator cannot satisfy get reviewers back."""
    needs_save = proposal.edited != edited
    proposal.edited = edited
    if proposal.status == Status.PENDING_REVIEW and proposal.claimed_by_id:
        task = lifecycle.active_task(proposal)
        proposal.claimed_by = None
        proposal._change_reason = f"handed to reviewers: the edited change needs {task.group.name if task else 'review'}"
        needs_save = True
    if needs_save:
        proposal.save()


def handle_manually(proposal_id: Any, user, reason: str) -> Proposal:
    """The claiming operator did the work outside HITL Gov.

    When the policy's approvals were given for this exact change, the proposal closes at once.
    Otherwise one operator alone could close what needed two finance approvals: the request waits
    for a second operator's `confirm_manual_handling`, which records a break-glass event.
    """
    check_operator(user)
    _require_reason(reason, "say what you did by hand")
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        _check_holder(proposal, user)
        if _approved_as_it_stands(proposal):
            _close_by_hand(proposal, user, reason)
        else:
            proposal.manual_requested_by, proposal.manual_request_reason = user, reason
            lifecycle.record(proposal, f"{_name(user)} asks to close this by hand without the approvals the policy "
                                       f"required ({reason}): a second operator must confirm", user=user)
    return proposal


def confirm_manual_handling(proposal_id: Any, user, confirmation: str) -> Proposal:
    """A second operator confirms a colleague's request to close a proposal by hand (break glass)."""
    check_operator(user)
    _require_reason(confirmation, "say why you confirm closing this by hand")
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        requester = proposal.manual_requested_by
        if requester is None or proposal.claimed_by_id != requester.pk or proposal.status not in CLAIMABLE:
            raise OperationRefused("no operator is asking to close this proposal by hand")
        if requester.pk == user.pk:
            raise PermissionDenied("a second operator must confirm: you asked for it yourself")
        if proposal.integration.acts_for_id == user.pk:
            raise PermissionDenied("the submitting agent's user cannot confirm closing its own proposal")
        BreakGlass.objects.create(proposal=proposal, requested_by=requester, confirmed_by=user, status_before=proposal.status,
                                  reason=proposal.manual_request_reason, confirmation=confirmation)
        _close_by_hand(proposal, requester, proposal.manual_request_reason, confirmed_by=user)
    return proposal


def _approved_as_it_stands(proposal: Proposal) -> bool:
    """The policy's approvals (or its automatic approval) were given for exactly this change."""
    return bool(proposal.approved_hash) and proposal.approved_hash == proposal.change_hash


def _close_by_hand(proposal: Proposal, user, reason: str, confirmed_by=None) -> None:
    proposal.handle_manually()
    lifecycle.close_open_tiers(proposal)
    attempt = lifecycle.next_attempt(proposal, Execution.Kind.EXECUTE)
    request = {"handled_manually_by": _name(user), "reason": reason}
    if confirmed_by is not None:
        request["confirmed_by"] = _name(confirmed_by)
    Execution.objects.create(
        proposal=proposal, kind=Execution.Kind.EXECUTE, attempt=attempt, outcome=Execution.Outcome.MANUAL,
        idempotency_key=f"hitl-{proposal.pk}-manual-{attempt}", change_hash=proposal.change_hash,
        request=request, finished_at=timezone.now(),
    )
    proposal.manual_requested_by, proposal.manual_request_reason = None, ""
    why = f"handled manually by {_name(user)}: {reason}"
    if confirmed_by is not None:
        why += f" (break glass, confirmed by {_name(confirmed_by)})"
    lifecycle.record(proposal, why, user=confirmed_by or user, status_reason=why)


def retry(proposal_id: Any, user, reason: str = "") -> Proposal:
    """Retry a failed execution (services.retry_execution, which refuses while another operator holds it)."""
    check_operator(user)
    try:
        return services.retry_execution(proposal_id, user, reason)
    except services.NotReviewable as exc:
        raise OperationRefused(str(exc)) from None


# ---- branch ---------------------------------------------------------------------------------

def branch(proposal_id: Any, user, changes: dict, reason: str) -> Proposal:
    """A new proposal from an existing one with edited changes, decided by the policy from scratch."""
    check_operator(user)
    _require_reason(reason, "say why this branch is needed")
    if not isinstance(changes, dict) or not changes:
        raise ValidationError({"changes": "must be a non-empty object of field to new value"})
    original = Proposal.objects.select_related("connector", "integration").get(pk=proposal_id)
    new = _branch_of(original, changes)
    live = lifecycle.read_live(new)  # reads the live record: outside the transaction
    try:
        with transaction.atomic(durable=True):
            original = lifecycle.lock(proposal_id)
            _check_branchable(original, user)
            new.idempotency_key = f"{original.idempotency_key}:branch:{original.branches.count() + 1}"
            lifecycle.apply_preview(new, live)
            lifecycle.record(new, f"branched from {original.pk} by {_name(user)}: {reason}", user=user)
            lifecycle.decide_and_route(new, user=user)
            if original.status in SUPERSEDED_BY_BRANCH:
                _supersede(original, new, user, reason)
    except IntegrityError:
        raise OperationRefused("another branch of this proposal was created at the same moment; try again") from None
    return new


def _check_branchable(original: Proposal, user) -> None:
    if original.status == Status.EXECUTING:
        raise OperationRefused("the proposal is executing; branch it once the execution has finished")
    refusal = claim_refusal(original, user)
    if refusal:
        raise OperationRefused(refusal)


def _branch_of(original: Proposal, changes: dict) -> Proposal:
    copied = {name: getattr(original, name) for name in services.PROPOSAL_FIELDS if name != "changes"}
    fingerprint = services.request_fingerprint({"branch_of": str(original.pk), "changes": changes})
    return Proposal(
        integration=original.integration, connector=original.connector, parent=original, request_hash=fingerprint,
        target_type=original.target_type, target_id=original.target_id, changes=changes, **copied,
    )


def _supersede(original: Proposal, new: Proposal, user, reason: str) -> None:
    original.cancel()
    lifecycle.close_open_tiers(original)
    original.status_reason = f"superseded by branch {new.pk} ({_name(user)}: {reason})"
    original._history_user, original._change_reason = user, original.status_reason
    original.save()


# ---- the thread -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ThreadEvent:
    """One line of a proposal's story, for the admin's Thread section."""

    at: datetime
    kind: str
    who: str
    text: str
    link: str | None = None  # a related proposal's id (parent or branch)


def thread(proposal: Proposal) -> list[ThreadEvent]:
    """Everything that happened to a proposal, oldest first: its origin, status changes, edits,
    claims, verdicts, executions, compensations and branches."""
    events = [*_history_events(proposal), *_review_events(proposal), *_execution_events(proposal)]
    if proposal.parent_id:
        events.append(ThreadEvent(proposal.created_at, "branch", "", "branched from", str(proposal.parent_id)))
    for child in proposal.branches.all():  # sorted below; read unordered (see ProposalAdmin._decision_page_reads)
        events.append(ThreadEvent(child.created_at, "branch", "", f"branch created ({child.status})", str(child.pk)))
    return sorted(events, key=lambda event: event.at)


def _history_events(proposal: Proposal) -> list[ThreadEvent]:
    events, previous = [], None
    for row in proposal.history.select_related("history_user").order_by("history_date", "history_id"):
        who = row.history_user.get_username() if row.history_user else ""
        events.append(ThreadEvent(row.history_date, _history_kind(row, previous), who, _history_text(row, previous)))
        previous = row
    return events


def _history_kind(row, previous) -> str:
    if previous is not None and row.changes != previous.changes:
        return "edit"
    if previous is not None and row.claimed_by_id != previous.claimed_by_id:
        return "claim"
    return "status"


def _history_text(row, previous) -> str:
    parts = []
    if previous is None or row.status != previous.status:
        parts.append(row.status if previous is None else f"{previous.status} → {row.status}")
    if previous is not None and row.changes != previous.changes:
        parts.append("change edited to " + json.dumps(row.changes, sort_keys=True))
    if row.history_change_reason:
        parts.append(row.history_change_reason)
    return "; ".join(parts)


def _review_events(proposal: Proposal) -> list[ThreadEvent]:
    return [
        ThreadEvent(review.created_at, "review", review.reviewer.get_username(),
                    f"{review.verdict} on tier {review.task.position + 1} ({review.task.group.name}) via {review.via}"
                    + (f" for {review.on_behalf_of.get_username()} (out of office)" if review.on_behalf_of_id else "")
                    + (f": {review.reason}" if review.reason else ""))
        for review in proposal.reviews.select_related("reviewer", "task__group", "on_behalf_of")
    ]


def _execution_events(proposal: Proposal) -> list[ThreadEvent]:
    events = []
    for execution in proposal.executions.all():
        text = f"{execution.kind} #{execution.attempt}: {execution.outcome}"
        if execution.error:
            text += f" ({execution.error})"
        events.append(ThreadEvent(execution.started_at, execution.kind, "", text))
    return events
