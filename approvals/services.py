"""Reviewing operations: submit, record a verdict (or edit then approve), cancel, release from a hold,
reject a held proposal, escalate, retry, hold approved work for review, evaluate circuit breakers.

Each public function is one operation: it owns its transaction, its history reason and the
work it queues after commit, and builds the rest from `approvals.lifecycle`'s steps. The
admin, the API and the operators' functions only translate requests into these.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django_fsm import ConcurrentTransition, can_proceed

from approvals import delegation, lifecycle, sweeps
from approvals.facts import canonical_json, change_money, check_money_fields, track_record
from approvals.lifecycle import CLAIMABLE, NotReviewable, active_task, can_review, claim_refusal  # noqa: F401  (public)
from approvals.models import Integration, Proposal, Review, ReviewTask, Status
from connectors.models import Connector
from ledger import capture, categories
from connectors.services import action_facts
from policies import breakers, engine
from policies.models import KillSwitch

log = logging.getLogger(__name__)


class IdempotencyConflict(Exception):
    """The integration reused an idempotency key for a different request."""


PROPOSAL_FIELDS = (
    "agent", "action", "changes", "amount", "currency", "confidence", "customer_impact",
    "evidence", "rationale", "context", "callback_url", "observed",
)


def request_fingerprint(data: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


# ---- submit ---------------------------------------------------------------------------------

def submit_proposal(
    integration: Integration, data: dict[str, Any], *, connector: Connector | None = None,
) -> tuple[Proposal, bool]:
    """Store a validated proposal, preview it, decide it and route it. Returns (proposal, created).

    The same idempotency key with the same body returns the first proposal; with another
    body it raises IdempotencyConflict. The unique constraint finds a repeated key, so a
    first submission (nearly all of them) does not look for one. `connector` is the
    connector `data` names when the caller has already read it (the API's validation has).
    """
    fingerprint = request_fingerprint(data)
    if connector is None or connector.slug != data["connector"]:
        connector = Connector.objects.get(slug=data["connector"])
    if problems := check_money_fields(data.get("changes") or {}, action_facts(connector, data["action"]).money_fields):
        raise ValidationError(problems)
    proposal = Proposal(
        integration=integration, idempotency_key=data["idempotency_key"], request_hash=fingerprint,
        connector=connector,
        target_type=(data.get("target") or {}).get("type", ""), target_id=(data.get("target") or {}).get("id", ""),
        **{name: data[name] for name in PROPOSAL_FIELDS if name in data},
    )
    live = lifecycle.read_live(proposal)  # talks to the system of record: before the transaction
    try:
        with transaction.atomic(durable=True):
            lifecycle.apply_preview(proposal, live)
            lifecycle.store_decided(proposal, f"submitted by integration {integration.name}")
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


# ---- verdicts -------------------------------------------------------------------------------

def record_verdict(
    proposal_id: Any, user, verdict: str, reason: str = "", *, changes: dict | None = None,
    via: str = "admin", integration: Integration | None = None, bulk: bool = False, category: str = "",
    expected_hash: str = "",
) -> Proposal:
    """A reviewer approves or rejects the active tier (or edits the change, then approves it).

    `category` is the reviewer's exception category (ledger.categories) for a rejection or an edit.
    `expected_hash`: the change the reviewer saw (a Slack button, an email link); refused if it was edited since.
    """
    if verdict not in Review.Verdict.values:
        raise ValidationError({"verdict": f"must be approve or reject, not {verdict!r}"})
    categories.check(category)
    if verdict == Review.Verdict.REJECT and not reason.strip():
        raise ValidationError({"reason": "a reason is required to reject"})
    edit = read_edit(proposal_id, changes) if changes is not None else None
    try:
        with transaction.atomic(durable=True):
            proposal = lifecycle.lock(proposal_id)
            if proposal.status != Status.PENDING_REVIEW:
                raise NotReviewable(f"the proposal is {proposal.status}, not waiting for review")
            if expected_hash and expected_hash != proposal.change_hash:
                raise NotReviewable("the change was edited since you saw it: open the proposal to decide the new one")
            task = check_reviewer(proposal, active_task(proposal), user, integration)
            if bulk and not task.bulk_allowed:
                raise PermissionDenied(f"tier {task.group.name} does not allow bulk approval")
            proposal._history_user = user
            if category:
                capture.categorize(category, by="reviewer")
            if edit is not None and edit[0] != proposal.changes:
                if verdict != Review.Verdict.APPROVE:
                    raise ValidationError({"changes": "changes can only accompany an approval"})
                floor = engine.Tier(group=task.group.name, required=1, sla_minutes=task.sla_minutes)
                apply_edit(proposal, floor, edit, user)
                return proposal  # someone else approves what this reviewer wrote
            if verdict == Review.Verdict.APPROVE:
                check_four_eyes(proposal, task, user)
            Review.objects.create(
                proposal=proposal, task=task, reviewer=user, verdict=verdict, reason=reason,
                change_hash=proposal.change_hash, via=via, on_behalf_of_id=delegation.stood_in_for(task, user),
            )
            count_verdict(proposal, task, user, verdict, reason, via)
    except IntegrityError:
        raise NotReviewable("you have already decided this tier") from None
    except ConcurrentTransition:
        raise NotReviewable("another reviewer decided this proposal at the same moment") from None
    return proposal


def check_reviewer(proposal: Proposal, task: ReviewTask | None, user, integration: Integration | None) -> ReviewTask:
    if integration is not None and integration.pk == proposal.integration_id:
        raise PermissionDenied("the submitting agent cannot decide its own proposal")
    if proposal.integration.acts_for_id and proposal.integration.acts_for_id == user.pk:
        raise PermissionDenied("the submitting agent's user cannot decide its own proposal")
    lifecycle.check_claim(proposal, user)
    if task is None and proposal.claimed_by_id:
        raise NotReviewable(f"{proposal.claimed_by.get_username()} has taken this proposal over")
    if task is None:
        raise NotReviewable("no review tier is waiting for a decision")
    if not user.has_perm("approvals.review_proposal"):
        raise PermissionDenied(f"{user.get_username()} does not have the permission to review proposals")
    if not can_review(task, user):
        raise PermissionDenied(f"only members of {task.group.name} can decide this tier")
    return task


def four_eyes_refusal(proposal: Proposal, task: ReviewTask, user) -> str:
    """Why `user` may not approve this tier, or '': an approval must come from someone new to the
    change, not its editor and not a person who approved it on another tier (one person counts once).
    A delegate is a member of the tier's group in their own right (approvals.delegation), so these
    rules apply to them as to anyone; an away member's absence only changes an all-members quorum."""
    if proposal.edited_by_id == user.pk:
        return f"{user.get_username()} edited this change: another reviewer must approve it"
    approved_elsewhere = Review.objects.filter(
        proposal=proposal, reviewer=user, verdict=Review.Verdict.APPROVE, change_hash=proposal.change_hash,
    ).exclude(task=task)
    if approved_elsewhere.exists():
        return f"{user.get_username()} already approved this change on another tier: each tier needs other people"
    return ""


def check_four_eyes(proposal: Proposal, task: ReviewTask, user) -> None:
    if refusal := four_eyes_refusal(proposal, task, user):
        raise PermissionDenied(refusal)


def _approvals_needed(task: ReviewTask, proposal: Proposal) -> int:
    if task.mode != "all":
        return task.required
    # "Every member" means every member four eyes let approve: not the agent's user, not the change's
    # editor, not someone who approved it on another tier; an away member is waited for in their delegate.
    approved_elsewhere = set(Review.objects.filter(
        proposal=proposal, verdict=Review.Verdict.APPROVE, change_hash=proposal.change_hash,
    ).exclude(task=task).values_list("reviewer", flat=True))
    excluded = {pk for pk in (proposal.integration.acts_for_id, proposal.edited_by_id) if pk} | approved_elsewhere
    replaced = delegation.stand_ins(task)
    members = task.group.user_set.filter(is_active=True).values_list("pk", flat=True)
    return max(len({replaced.get(pk, pk) for pk in members} - excluded), 1)


def count_verdict(proposal: Proposal, task: ReviewTask, user, verdict: str, reason: str, via: str) -> None:
    """A recorded verdict takes effect, inside the caller's transaction: a rejection ends the proposal;
    enough approvals satisfy the tier, and the last tier approves the change and queues its execution."""
    proposal._change_reason = f"{verdict} by {user.get_username()} via {via}" + (f": {reason}" if reason else "")
    if verdict == Review.Verdict.REJECT:
        task.state = ReviewTask.State.REJECTED
        task.save()
        proposal.review_tasks.filter(state=ReviewTask.State.WAITING).update(state=ReviewTask.State.CLOSED)
        proposal.reject()
        proposal.status_reason = reason
        lifecycle.mark_active_tier(proposal, None)
        proposal.save()
        transaction.on_commit(lambda: evaluate_breakers(proposal.agent))
        return
    approvals = task.reviews.filter(verdict=Review.Verdict.APPROVE, change_hash=proposal.change_hash).count()
    if approvals < _approvals_needed(task, proposal):
        proposal.save()
        return
    task.state = ReviewTask.State.SATISFIED
    task.save()
    if lifecycle.activate_next_tier(proposal) is None:
        proposal.approved_hash = proposal.change_hash
        proposal.approve()
        proposal.status_reason = f"approved by {user.get_username()}"
        lifecycle.enqueue_execution(proposal)
    proposal.save()


def read_edit(proposal_id: Any, changes: Any) -> tuple[dict, lifecycle.LivePreview]:
    """Check an edited change and read its preview, before the edit's transaction."""
    if not isinstance(changes, dict) or not changes:
        raise ValidationError({"changes": "must be a non-empty object of field to new value"})
    proposal = Proposal.objects.select_related("connector").get(pk=proposal_id)
    proposal.changes = changes  # previewed as edited, not saved: the edit's transaction saves it
    return changes, lifecycle.read_live(proposal)


def apply_edit(proposal: Proposal, floor: engine.Tier, edit: tuple[dict, lifecycle.LivePreview], user) -> None:
    """A person edits the planned change, inside the caller's transaction: the edited change is
    previewed and decided again, never waved through, and needs at least `floor` (the editor's
    tier) where the policy would run it alone. Earlier approvals were for another change, so review
    starts over; the editor may not approve their own change (four eyes).
    """
    changes, live = edit
    proposal.review_tasks.exclude(state=ReviewTask.State.SATISFIED).update(state=ReviewTask.State.CLOSED)
    lifecycle.mark_active_tier(proposal, None)  # the policy's new decision opens the tiers it asks for
    money_fields = action_facts(proposal.connector, proposal.action).money_fields
    if problems := check_money_fields(changes, money_fields):
        raise ValidationError(problems)
    if changes != proposal.changes:
        proposal.edited_by = user
    proposal.changes, proposal.edited = changes, True
    if (money := change_money(changes, money_fields)) is not None:
        proposal.amount = money  # the agent's declared amount described the change before the edit
    lifecycle.apply_preview(proposal, live)
    lifecycle.decide_and_route(proposal, human_edit=floor, user=user)


# ---- cancel, release, reject held -----------------------------------------------------------

def cancel_proposal(proposal_id: Any, integration: Integration, reason: str = "") -> Proposal:
    """The submitting integration withdraws a proposal that is not executing or done."""
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if proposal.integration_id != integration.pk:
            raise Proposal.DoesNotExist
        if not can_proceed(proposal.cancel):
            raise NotReviewable(f"a proposal that is {proposal.status} cannot be cancelled")
        proposal.cancel()
        lifecycle.close_open_tiers(proposal)
        why = reason or f"cancelled by integration {integration.name}"
        lifecycle.record(proposal, why, status_reason=why)
    return proposal


def send_to_review(proposal_id: Any, user, reason: str) -> Proposal:
    """An operator takes a triaged (or stale) proposal out of the hold: previewed and decided afresh,
    reviewed at least. If the operator held its claim, handing it to reviewers ends the claim."""
    if not reason.strip():
        raise ValidationError({"reason": "say why this proposal may go to review"})
    live = lifecycle.read_live(Proposal.objects.select_related("connector").get(pk=proposal_id))
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if proposal.status not in (Status.TRIAGE, Status.STALE):
            raise NotReviewable(f"a proposal that is {proposal.status} is not on hold")
        lifecycle.check_claim(proposal, user)
        lifecycle.require(proposal.send_to_review, user)
        lifecycle.apply_preview(proposal, live)
        if proposal.claimed_by_id == user.pk:
            proposal.claimed_by = None
        lifecycle.redecide_into_review(
            proposal, proposal.send_to_review, why=f"sent to review by {user.get_username()}", status_reason=reason,
            user=user, note={"released_from_hold_by": user.get_username(), "release_reason": reason},
        )
    return proposal


def reject_held(proposal_id: Any, user, reason: str) -> Proposal:
    """An operator rejects a proposal held in triage or gone stale."""
    if not reason.strip():
        raise ValidationError({"reason": "a reason is required to reject"})
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if proposal.status not in (Status.TRIAGE, Status.STALE):
            raise NotReviewable(f"a proposal that is {proposal.status} is not on hold")
        lifecycle.check_claim(proposal, user)
        lifecycle.require(proposal.reject, user)
        proposal.reject()
        lifecycle.close_open_tiers(proposal)
        lifecycle.record(proposal, f"rejected by {user.get_username()}: {reason}", user=user, status_reason=reason)
    return proposal


# ---- escalate, retry, hold for review -------------------------------------------------------

def escalate_overdue(now=None) -> int:
    """Reviews that missed their SLA: the escalation group may now decide too. Returns how many.

    Set-based and batched (approvals.sweeps): a few statements however many are due."""
    return sweeps.escalate_overdue(now)


def expire_overdue(now=None) -> int:
    """Work still waiting at its matrix's maximum age (or for the agent's answer) expires. Returns how many."""
    return sweeps.expire_overdue(now)


def retry_execution(proposal_id: Any, user, reason: str = "") -> Proposal:
    """An operator retries a failed execution; the executor re-checks everything again."""
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if proposal.status != Status.FAILED:
            raise NotReviewable(f"a proposal that is {proposal.status} has no failed execution to retry")
        lifecycle.check_claim(proposal, user)
        lifecycle.require(proposal.retry, user)
        proposal.retry()
        lifecycle.record(proposal, f"execution retried by {user.get_username()}", user=user,
                         status_reason=reason or f"retry by {user.get_username()}")
        lifecycle.enqueue_execution(proposal)
    return proposal


def hold_for_review(proposal_id: Any) -> Proposal:
    """Policy-approved work not yet started goes to reviewers after a force_review switch engaged.

    The executor calls this instead of starting the write; the policy decides afresh (with the
    switch), so the tiers are the ones the switch demands.
    """
    with transaction.atomic(durable=True):
        proposal = lifecycle.lock(proposal_id)
        if proposal.status != Status.APPROVED:
            return proposal
        lifecycle.redecide_into_review(proposal, proposal.hold_for_review, why="held for review before execution")
    return proposal


def evaluate_breakers(agent: str) -> list[KillSwitch]:
    """Engage the kill switches this agent's recent rejections call for; returns the ones engaged now.

    Runs after the reviewer's verdict is committed, so a failure here is logged rather than
    raised: the verdict stands either way, and the next rejection evaluates again.
    """
    if not agent:
        return []
    try:
        engaged = []
        for breaker in breakers.covering(agent):
            since = breakers.last_reset(breaker, agent)
            seen = track_record(agent, connector=breaker.connector, since=since, window=breaker.window)
            if (switch := breakers.trip_if_needed(breaker, agent, seen)) is not None:
                engaged.append(switch)
        return engaged
    except Exception:
        log.exception("circuit breakers for agent %s could not be evaluated", agent)
        return []
