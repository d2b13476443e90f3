"""People's part in AI-assisted and on-the-loop work: one function per operation.

AI-assisted (outcome "assisted"): the proposal is a recommendation in a group's inbox and nothing
is ever written for it. A member marks it done (they acted in the system of record themselves),
dismisses it (a false positive: it counts against the agent's track record) or escalates it to
the tier's escalation group, whose members then decide it.

Human-on-the-loop (outcome "on_the_loop"): the change ran at once; when the rule sampled it, a
member confirms it or rolls it back in one click (the rollback counts against the agent).

Each function owns its transaction and history reason; the admin only calls these.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from approvals import lifecycle, rollback
from approvals.lifecycle import NotReviewable
from approvals.models import OversightTask, Proposal, Status
from approvals.services import evaluate_breakers

RAN = (Status.EXECUTED, Status.DRY_RUN)  # on-the-loop work people can judge after the fact


def _lock_task(proposal: Proposal, kind: str) -> OversightTask:
    task = OversightTask.objects.select_for_update(of=("self",)).select_related("group", "escalation_group").filter(
        proposal=proposal, kind=kind).first()
    if task is None:
        raise NotReviewable(f"this proposal has no {OversightTask.Kind(kind).label}")
    if not task.is_open:
        raise NotReviewable(f"this {OversightTask.Kind(kind).label} is already {task.get_state_display().lower()}")
    return task


def may_act(task: OversightTask, user) -> bool:
    """Members of the task's group, or of its escalation group once escalated, with the review permission."""
    groups = {task.group_id} | ({task.escalation_group_id} if task.state == OversightTask.State.ESCALATED else set())
    return (user.is_active and user.has_perm("approvals.review_proposal")
            and user.groups.filter(pk__in=groups).exists())


def _check(proposal: Proposal, task: OversightTask, user) -> None:
    if proposal.integration.acts_for_id and proposal.integration.acts_for_id == user.pk:
        raise PermissionDenied("the submitting agent's user cannot judge its own work")
    if not may_act(task, user):
        who = task.group.name + (f" or {task.escalation_group.name}" if task.state == OversightTask.State.ESCALATED else "")
        raise PermissionDenied(f"only members of {who} can decide this {task.get_kind_display()}")


def _close(task: OversightTask, state: str, user, reason: str) -> None:
    task.state, task.decided_by, task.decided_at, task.reason = state, user, timezone.now(), reason
    task._history_user, task._change_reason = user, f"{state} by {user.get_username()}" + (f": {reason}" if reason else "")
    task.save()


def _need(reason: str, why: str) -> str:
    if not reason.strip():
        raise ValidationError({"reason": why})
    return reason.strip()


# ---- AI-assisted alerts ---------------------------------------------------------------------

def dismiss(proposal_id: Any, user, reason: str) -> Proposal:
    """A false positive: the recommendation ends dismissed, and counts as overruled in the agent's record."""
    reason = _need(reason, "say why this recommendation is wrong")
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        task = _lock_task(proposal, OversightTask.Kind.ALERT)
        _check(proposal, task, user)
        lifecycle.require(proposal.dismiss, user)
        proposal.dismiss()
        _close(task, OversightTask.State.DISMISSED, user, reason)
        lifecycle.record(proposal, f"dismissed by {user.get_username()}: {reason}", user=user, status_reason=reason)
        transaction.on_commit(lambda: evaluate_breakers(proposal.agent))
    return proposal


def mark_done(proposal_id: Any, user, note: str = "") -> Proposal:
    """The person acted on the recommendation in the system of record themselves; nothing is written here."""
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        task = _lock_task(proposal, OversightTask.Kind.ALERT)
        _check(proposal, task, user)
        lifecycle.require(proposal.mark_done, user)
        proposal.mark_done()
        _close(task, OversightTask.State.DONE, user, note.strip())
        why = f"acted on by {user.get_username()}" + (f": {note.strip()}" if note.strip() else "")
        lifecycle.record(proposal, why, user=user, status_reason=why)
    return proposal


def escalate(proposal_id: Any, user, reason: str) -> Proposal:
    """A real problem: hand the alert to the tier's escalation group, whose members may now decide it too."""
    reason = _need(reason, "say why this needs escalating")
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        task = _lock_task(proposal, OversightTask.Kind.ALERT)
        _check(proposal, task, user)
        if task.state == OversightTask.State.ESCALATED:
            raise NotReviewable(f"already escalated to {task.escalation_group.name}")
        if task.escalation_group is None:
            raise NotReviewable(f"the rule names no escalation group for {task.group.name}'s alerts")
        task.state, task.reason = OversightTask.State.ESCALATED, reason
        task._history_user = user
        task._change_reason = f"escalated to {task.escalation_group.name} by {user.get_username()}: {reason}"
        task.save()
        lifecycle.record(proposal, task._change_reason, user=user, status_reason=task._change_reason)
    return proposal


# ---- on-the-loop work -----------------------------------------------------------------------

def confirm(proposal_id: Any, user, note: str = "") -> Proposal:
    """The reviewer saw what ran and lets it stand."""
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        task = _lock_task(proposal, OversightTask.Kind.AFTER_THE_FACT)
        _check(proposal, task, user)
        if proposal.status not in RAN:
            raise NotReviewable(f"the proposal is {proposal.status}: only work that ran can be confirmed")
        _close(task, OversightTask.State.CONFIRMED, user, note.strip())
        lifecycle.record(proposal, f"confirmed after the fact by {user.get_username()}"
                         + (f": {note.strip()}" if note.strip() else ""), user=user)
    return proposal


def roll_back(proposal_id: Any, user, reason: str) -> rollback.RollbackResult:
    """One click: undo what ran (approvals.rollback, with all its checks) and close the review as rolled back.

    A rollback the system refuses (the record changed since, a message cannot be recalled) leaves
    the review open and the refusal on record, for the reviewer to handle by hand.
    """
    reason = _need(reason, "say why this change is being rolled back")
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        task = _lock_task(proposal, OversightTask.Kind.AFTER_THE_FACT)
        _check(proposal, task, user)

    def record_review(locked: Proposal, result: str) -> None:
        if result in ("rolled_back", "nothing_written"):
            _close(OversightTask.objects.select_for_update().get(pk=task.pk), OversightTask.State.ROLLED_BACK, user, reason)
            transaction.on_commit(lambda: evaluate_breakers(locked.agent))

    return rollback.undo(proposal_id, user, reason, then=record_review)
