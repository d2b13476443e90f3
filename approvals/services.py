"""The one write path for proposals: submit, route, review, cancel, escalate.

Each operation runs its transition, the save, the audit row and any follow-up work (queued
with on_commit) in one transaction, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django_fsm import ConcurrentTransition, can_proceed, has_transition_perm

from approvals.facts import canonical_json, change_hash, facts_as_dict, facts_for
from approvals.models import Integration, Proposal, Review, ReviewTask, Status
from connectors.adapters.base import ConnectorError, Preview
from connectors.models import Connector
from connectors.services import preview_change, target_of
from policies import engine
from policies.breakers import evaluate_breakers
from policies.services import NoLiveMatrix, engaged_switches, live_matrix


class IdempotencyConflict(Exception):
    """The integration reused an idempotency key for a different request."""


class NotReviewable(Exception):
    """The proposal is not waiting for this decision (any more)."""


CLAIMABLE = (Status.PENDING_REVIEW, Status.TRIAGE, Status.STALE, Status.FAILED)


def claim_refusal(proposal: Proposal, user) -> str:
    """Why `user` may not act on a proposal someone else has taken over, or ''.

    A claim only binds while the proposal can still be steered; on a closed proposal it is
    just the record of who handled it. Every write path below checks it, whatever the caller.
    """
    if proposal.claimed_by_id and proposal.claimed_by_id != user.pk and proposal.status in CLAIMABLE:
        return (f"{proposal.claimed_by.get_username()} has taken this proposal over; "
                "verdicts and operations are refused until they release it")
    return ""


def _check_claim(proposal: Proposal, user) -> None:
    refusal = claim_refusal(proposal, user)
    if refusal:
        raise NotReviewable(refusal)


PROPOSAL_FIELDS = (
    "agent", "action", "changes", "amount", "currency", "confidence", "customer_impact",
    "evidence", "rationale", "context", "callback_url",
)


def request_fingerprint(data: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def submit_proposal(integration: Integration, data: dict[str, Any]) -> tuple[Proposal, bool]:
    """Store a validated proposal, preview it, decide it and route it. Returns (proposal, created).

    The same idempotency key with the same body returns the first proposal; with another
    body it raises IdempotencyConflict.
    """
    fingerprint = request_fingerprint(data)
    existing = _existing(integration, data["idempotency_key"], fingerprint)
    if existing:
        return existing, False
    proposal = Proposal(
        integration=integration, idempotency_key=data["idempotency_key"], request_hash=fingerprint,
        connector=Connector.objects.get(slug=data["connector"]),
        target_type=(data.get("target") or {}).get("type", ""), target_id=(data.get("target") or {}).get("id", ""),
        **{name: data[name] for name in PROPOSAL_FIELDS if name in data},
    )
    preview, preview_error = _preview(proposal)
    try:
        with transaction.atomic():
            _apply_preview(proposal, preview, preview_error)
            proposal._change_reason = f"submitted by integration {integration.name}"
            proposal.save()
            _decide_and_route(proposal, preview_error=preview_error)
    except IntegrityError:
        existing = _existing(integration, data["idempotency_key"], fingerprint)
        if existing:
            return existing, False
        raise
    return proposal, True


def _existing(integration: Integration, key: str, fingerprint: str) -> Proposal | None:
    existing = Proposal.objects.filter(integration=integration, idempotency_key=key).first()
    if existing and existing.request_hash != fingerprint:
        raise IdempotencyConflict(f"idempotency key {key!r} was already used for a different request")
    return existing


def _preview(proposal: Proposal) -> tuple[Preview | None, str]:
    """Read the live record and diff it. Talks to the system of record, so never inside a transaction."""
    try:
        target = target_of(proposal.target_type, proposal.target_id)
        return preview_change(proposal.connector, proposal.action, target, proposal.changes), ""
    except (ConnectorError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _apply_preview(proposal: Proposal, preview: Preview | None, error: str) -> None:
    proposal.preview = preview.as_dict() if preview else {"changes": []}
    proposal.preview_before = preview.before if preview else {}
    proposal.preview_error = error
    proposal.change_hash = change_hash(proposal)


def _decide(proposal: Proposal, preview_error: str) -> dict[str, Any]:
    """The decision as stored with the proposal, with the facts it saw (so it can be replayed)."""
    try:
        matrix = live_matrix()
    except NoLiveMatrix as exc:
        decision = engine.Decision(outcome="triage", matrix_version=0, rules=(), reasons=(str(exc),), tiers=(), trace=())
        return {**decision.as_dict(), "facts": None}
    facts = facts_for(proposal, matrix)
    decision = engine.decide(facts, matrix, engaged_switches())
    if preview_error and engine.OUTCOMES.index(decision.outcome) < engine.OUTCOMES.index("triage"):
        # Nobody can judge a change whose effect could not be previewed.
        reasons = (*decision.reasons, f"preview failed ({preview_error}): held for triage")
        decision = dataclasses.replace(decision, outcome="triage", tiers=(), reasons=reasons)
    return {**_decision_record(decision, matrix, facts), "facts": facts_as_dict(facts)}


FULL_TRACE_RULES = 500


def _decision_record(decision: engine.Decision, matrix: engine.CompiledMatrix, facts: engine.Facts) -> dict[str, Any]:
    """The decision as stored. Large matrices keep the trace of the rules the index let through.

    The rules it skipped differ from this proposal in connector, action or agent; their entries
    can be rebuilt at any time from the stored facts and the frozen matrix version.
    """
    trace = decision.trace
    record = dataclasses.replace(decision, trace=()).as_dict()
    if len(trace) > FULL_TRACE_RULES:
        record["trace_omitted"] = len(trace) - len(candidates := matrix.candidates(facts))
        trace = [trace[i] for i in candidates]
    record["trace"] = [{"rule": e.rule, "matched": e.matched, "reason": e.reason} for e in trace]
    return record


def _decide_and_route(proposal: Proposal, *, preview_error: str = "", floor_tiers: tuple = ()) -> None:
    decision = _decide(proposal, preview_error)
    tiers = tuple(engine.Tier(**tier) for tier in decision["tiers"])
    if decision["outcome"] == "auto" and floor_tiers:
        # A human edited the change: it still needs that human's tier, never runs alone.
        decision["outcome"], tiers = "review", floor_tiers
    proposal.decision = decision
    proposal.outcome, proposal.matrix_version = decision["outcome"], decision["matrix_version"]
    proposal.status_reason = "; ".join(decision["reasons"])
    route = {"block": proposal.block, "triage": proposal.hold_for_triage, "review": proposal.route_to_review}
    if proposal.outcome in route:
        route[proposal.outcome]()
    else:
        proposal.approved_hash = proposal.change_hash
        proposal.approve()
    proposal._change_reason = f"decided {proposal.outcome}: {proposal.status_reason}"
    proposal.save()
    if proposal.outcome == "review":
        _open_review_tasks(proposal, tiers)
    elif proposal.outcome == "auto":
        enqueue_execution(proposal)


def _open_review_tasks(proposal: Proposal, tiers: tuple[engine.Tier, ...]) -> None:
    first = proposal.review_tasks.count()  # after an edit, earlier tiers stay on record
    for position, tier in enumerate(tiers, start=first):
        ReviewTask.objects.create(
            proposal=proposal, position=position, group=Group.objects.get_or_create(name=tier.group)[0],
            required=tier.required, mode=tier.mode, sla_minutes=tier.sla_minutes, bulk_allowed=tier.bulk_allowed,
            escalation_group=Group.objects.get_or_create(name=tier.escalation_group)[0] if tier.escalation_group else None,
        )
    _activate_next_task(proposal)


def _activate_next_task(proposal: Proposal) -> ReviewTask | None:
    task = proposal.review_tasks.filter(state=ReviewTask.State.WAITING).order_by("position").first()
    if task:
        task.state, task.due_at = ReviewTask.State.ACTIVE, timezone.now() + timedelta(minutes=task.sla_minutes)
        task.save()
    proposal.due_at = task.due_at if task else None
    Proposal.objects.filter(pk=proposal.pk).update(due_at=proposal.due_at)
    return task


def enqueue_execution(proposal: Proposal) -> None:
    from approvals.tasks import execute_proposal

    execute_proposal.delay_on_commit(str(proposal.pk))


def active_task(proposal: Proposal) -> ReviewTask | None:
    return proposal.review_tasks.filter(state=ReviewTask.State.ACTIVE).select_related("group", "escalation_group").first()


def can_review(task: ReviewTask, user) -> bool:
    groups = {task.group_id} | ({task.escalation_group_id} if task.escalated_at and task.escalation_group_id else set())
    return user.is_active and user.groups.filter(pk__in=groups).exists()


def _check_reviewer(proposal: Proposal, task: ReviewTask | None, user, integration: Integration | None) -> ReviewTask:
    if integration is not None and integration.pk == proposal.integration_id:
        raise PermissionDenied("the submitting agent cannot decide its own proposal")
    if proposal.integration.acts_for_id and proposal.integration.acts_for_id == user.pk:
        raise PermissionDenied("the submitting agent's user cannot decide its own proposal")
    _check_claim(proposal, user)
    if task is None and proposal.claimed_by_id:
        raise NotReviewable(f"{proposal.claimed_by.get_username()} has taken this proposal over")
    if task is None:
        raise NotReviewable("no review tier is waiting for a decision")
    if not user.has_perm("approvals.review_proposal"):
        raise PermissionDenied(f"{user.get_username()} does not have the permission to review proposals")
    if not can_review(task, user):
        raise PermissionDenied(f"only members of {task.group.name} can decide this tier")
    return task


def _approvals_needed(task: ReviewTask, proposal: Proposal) -> int:
    if task.mode != "all":
        return task.required
    members = task.group.user_set.filter(is_active=True).exclude(pk=proposal.integration.acts_for_id)
    return max(members.count(), 1)


def record_verdict(
    proposal_id: Any, user, verdict: str, reason: str = "", *, changes: dict | None = None,
    via: str = "admin", integration: Integration | None = None, bulk: bool = False,
) -> Proposal:
    """A reviewer approves or rejects the active tier (or edits the change, then approves it)."""
    if verdict not in Review.Verdict.values:
        raise ValidationError({"verdict": f"must be approve or reject, not {verdict!r}"})
    if verdict == Review.Verdict.REJECT and not reason.strip():
        raise ValidationError({"reason": "a reason is required to reject"})
    edit = _edit_preview(proposal_id, changes) if changes is not None else None
    try:
        with transaction.atomic():
            proposal = Proposal.objects.select_for_update(of=("self",)).select_related("integration").get(pk=proposal_id)
            if proposal.status != Status.PENDING_REVIEW:
                raise NotReviewable(f"the proposal is {proposal.status}, not waiting for review")
            task = _check_reviewer(proposal, active_task(proposal), user, integration)
            if bulk and not task.bulk_allowed:
                raise PermissionDenied(f"tier {task.group.name} does not allow bulk approval")
            proposal._history_user = user
            if edit is not None and edit[0] != proposal.changes:
                if verdict != Review.Verdict.APPROVE:
                    raise ValidationError({"changes": "changes can only accompany an approval"})
                task = _apply_edit(proposal, task, edit, user, reason)
                if task is None:
                    return proposal
            Review.objects.create(
                proposal=proposal, task=task, reviewer=user, verdict=verdict, reason=reason,
                change_hash=proposal.change_hash, via=via,
            )
            _after_verdict(proposal, task, user, verdict, reason, via)
    except IntegrityError:
        raise NotReviewable("you have already decided this tier") from None
    except ConcurrentTransition:
        raise NotReviewable("another reviewer decided this proposal at the same moment") from None
    return proposal


def _after_verdict(proposal: Proposal, task: ReviewTask, user, verdict: str, reason: str, via: str) -> None:
    proposal._change_reason = f"{verdict} by {user.get_username()} via {via}" + (f": {reason}" if reason else "")
    if verdict == Review.Verdict.REJECT:
        task.state = ReviewTask.State.REJECTED
        task.save()
        proposal.review_tasks.filter(state=ReviewTask.State.WAITING).update(state=ReviewTask.State.CLOSED)
        proposal.reject()
        proposal.status_reason, proposal.due_at = reason, None
        proposal.save()
        transaction.on_commit(lambda: evaluate_breakers(proposal.agent))
        return
    approvals = task.reviews.filter(verdict=Review.Verdict.APPROVE, change_hash=proposal.change_hash).count()
    if approvals < _approvals_needed(task, proposal):
        proposal.save()
        return
    task.state = ReviewTask.State.SATISFIED
    task.save()
    if _activate_next_task(proposal) is None:
        proposal.approved_hash = proposal.change_hash
        proposal.approve()
        proposal.status_reason = f"approved by {user.get_username()}"
        enqueue_execution(proposal)
    proposal.save()


def _edit_preview(proposal_id: Any, changes: dict) -> tuple[dict, Preview | None, str]:
    if not isinstance(changes, dict) or not changes:
        raise ValidationError({"changes": "must be a non-empty object of field to new value"})
    proposal = Proposal.objects.select_related("connector").get(pk=proposal_id)
    proposal.changes = changes
    preview, error = _preview(proposal)
    return changes, preview, error


def _apply_edit(proposal: Proposal, task: ReviewTask, edit: tuple, user, reason: str) -> ReviewTask | None:
    """Edit-then-approve: the edited change is previewed and decided again, never waved through.

    Earlier approvals were for another change, so review starts over for the new one; the
    editor's approval counts on the new first tier when they belong to it.
    """
    changes, preview, error = edit
    floor = (engine.Tier(group=task.group.name, required=1, sla_minutes=task.sla_minutes),)
    proposal.review_tasks.exclude(state=ReviewTask.State.SATISFIED).update(state=ReviewTask.State.CLOSED)
    proposal.changes, proposal.edited = changes, True
    _apply_preview(proposal, preview, error)
    _decide_and_route(proposal, preview_error=error, floor_tiers=floor)
    new_task = active_task(proposal) if proposal.status == Status.PENDING_REVIEW else None
    if new_task is None or not can_review(new_task, user):
        return None
    return new_task


def _require(transition, user) -> None:
    """The transition's own permission guard, applied to the person asking for it."""
    if not has_transition_perm(transition, user):
        raise PermissionDenied(f"{user.get_username()} may not {transition.__name__.replace('_', ' ')} this proposal")


def _locked(proposal_id: Any) -> Proposal:
    return Proposal.objects.select_for_update(of=("self",)).select_related("integration", "connector").get(pk=proposal_id)


def cancel_proposal(proposal_id: Any, integration: Integration, reason: str = "") -> Proposal:
    """The submitting integration withdraws a proposal that is not executing or done."""
    with transaction.atomic():
        proposal = _locked(proposal_id)
        if proposal.integration_id != integration.pk:
            raise Proposal.DoesNotExist
        if not can_proceed(proposal.cancel):
            raise NotReviewable(f"a proposal that is {proposal.status} cannot be cancelled")
        proposal.cancel()
        _close_open_tasks(proposal)
        proposal.status_reason = reason or f"cancelled by integration {integration.name}"
        proposal._change_reason = proposal.status_reason
        proposal.save()
    return proposal


def _close_open_tasks(proposal: Proposal) -> None:
    proposal.review_tasks.filter(state__in=[ReviewTask.State.WAITING, ReviewTask.State.ACTIVE]).update(
        state=ReviewTask.State.CLOSED
    )
    proposal.due_at = None


def send_to_review(proposal_id: Any, user, reason: str) -> Proposal:
    """An operator takes a triaged (or stale) proposal out of the hold: preview and decide it afresh."""
    if not reason.strip():
        raise ValidationError({"reason": "say why this proposal may go to review"})
    proposal = Proposal.objects.select_related("connector").get(pk=proposal_id)
    preview, error = _preview(proposal)
    with transaction.atomic():
        proposal = _locked(proposal_id)
        if proposal.status not in (Status.TRIAGE, Status.STALE):
            raise NotReviewable(f"a proposal that is {proposal.status} is not on hold")
        _check_claim(proposal, user)
        _require(proposal.send_to_review, user)
        _close_open_tasks(proposal)
        _apply_preview(proposal, preview, error)
        decision = _decide(proposal, "")
        tiers = tuple(engine.Tier(**tier) for tier in decision["tiers"]) or _default_tiers()
        proposal.send_to_review()
        proposal.decision = {**decision, "released_from_hold_by": user.get_username(), "release_reason": reason}
        proposal.status_reason = reason
        proposal._history_user, proposal._change_reason = user, f"sent to review by {user.get_username()}: {reason}"
        proposal.save()
        _open_review_tasks(proposal, tiers)
    return proposal


def _default_tiers() -> tuple[engine.Tier, ...]:
    try:
        return live_matrix().spec.default_tiers or (engine.Tier(group="operators"),)
    except NoLiveMatrix:
        return (engine.Tier(group="operators"),)


def reject_held(proposal_id: Any, user, reason: str) -> Proposal:
    """An operator rejects a proposal held in triage or gone stale."""
    if not reason.strip():
        raise ValidationError({"reason": "a reason is required to reject"})
    with transaction.atomic():
        proposal = _locked(proposal_id)
        if proposal.status not in (Status.TRIAGE, Status.STALE):
            raise NotReviewable(f"a proposal that is {proposal.status} is not on hold")
        _check_claim(proposal, user)
        _require(proposal.reject, user)
        proposal.reject()
        _close_open_tasks(proposal)
        proposal.status_reason = reason
        proposal._history_user, proposal._change_reason = user, f"rejected by {user.get_username()}: {reason}"
        proposal.save()
    return proposal


def escalate_overdue(now=None) -> int:
    """Reviews that missed their SLA: the escalation group may now decide too. Returns how many."""
    now = now or timezone.now()
    escalated = 0
    overdue = ReviewTask.objects.filter(state=ReviewTask.State.ACTIVE, due_at__lt=now, escalated_at__isnull=True)
    for task_id in overdue.values_list("pk", flat=True):
        with transaction.atomic():
            task = ReviewTask.objects.select_for_update(of=("self",)).select_related("escalation_group").get(pk=task_id)
            if task.escalated_at or task.state != ReviewTask.State.ACTIVE:
                continue
            task.escalated_at = now
            target = task.escalation_group.name if task.escalation_group else "nobody (no escalation group)"
            task._change_reason = f"SLA missed: escalated to {target}"
            task.save()
            escalated += 1
    return escalated


def retry_execution(proposal_id: Any, user, reason: str = "") -> Proposal:
    """An operator retries a failed execution; the write path re-checks everything again."""
    with transaction.atomic():
        proposal = _locked(proposal_id)
        if proposal.status != Status.FAILED:
            raise NotReviewable(f"a proposal that is {proposal.status} has no failed execution to retry")
        _check_claim(proposal, user)
        _require(proposal.retry, user)
        proposal.retry()
        proposal.status_reason = reason or f"retry by {user.get_username()}"
        proposal._history_user, proposal._change_reason = user, f"execution retried by {user.get_username()}"
        proposal.save()
        enqueue_execution(proposal)
    return proposal


def hold_for_review(proposal: Proposal) -> None:
    """Policy-approved work not yet started goes to reviewers after a force_review switch engaged.

    Called by the executor on a locked proposal inside its transaction; the policy decides
    afresh (with the switch), so the tiers are the ones the switch demands.
    """
    decision = _decide(proposal, "")
    tiers = tuple(engine.Tier(**tier) for tier in decision["tiers"]) or _default_tiers()
    proposal.hold_for_review()
    proposal.decision, proposal.outcome, proposal.approved_hash = decision, "review", ""
    proposal.status_reason = "; ".join(decision["reasons"])
    proposal._change_reason = f"held for review before execution: {proposal.status_reason}"
    proposal.save()
    _open_review_tasks(proposal, tiers)
