"""The steps every proposal operation is made of: lock, preview, decide, route, tiers, claim checks.

`approvals.services`, `approvals.operations`, `approvals.execution` and `approvals.rollback`
each own whole operations (their transaction, history reason and follow-up work); they build
them from these steps and nothing else, so a rule lives in one place. Nothing here opens a
transaction of its own except where it says so: the caller's operation decides.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.utils import timezone
from django_fsm import has_transition_perm

from approvals import history_rows, notifications, outbox
from approvals.facts import change_hash, decision_facts, facts_as_dict
from approvals.models import OversightTask, Proposal, ReviewTask, Status
from connectors.services import ConnectorError, Preview, executed_by_client, preview_change, target_of
from policies import engine
from policies.matrix_spec import DEFAULT_MAX_AGE_MINUTES
from policies.services import NoLiveMatrix, live_matrix, policy_state, tier_groups

alerts = logging.getLogger("hitlgov.alerts")  # operators route this logger to their paging

CLAIMABLE = (Status.PENDING_REVIEW, Status.TRIAGE, Status.STALE, Status.FAILED)
OPEN_OVERSIGHT = (OversightTask.State.OPEN, OversightTask.State.ESCALATED)  # an alert or after-the-fact review still to do


class NotReviewable(Exception):
    """The proposal is not waiting for this decision (any more); the message says why."""


# ---- locking and claims ---------------------------------------------------------------------

def lock(proposal_id: Any) -> Proposal:
    """The proposal, row-locked until the caller's transaction ends (only its own row)."""
    return Proposal.objects.select_for_update(of=("self",)).select_related("integration", "connector").get(pk=proposal_id)


def claim_refusal(proposal: Proposal, user) -> str:
    """Why `user` may not act on a proposal someone else has taken over, or ''.

    A claim only binds while the proposal can still be steered; on a closed proposal it is
    just the record of who handled it.
    """
    if proposal.claimed_by_id and proposal.claimed_by_id != user.pk and proposal.status in CLAIMABLE:
        return (f"{proposal.claimed_by.get_username()} has taken this proposal over; "
                "verdicts and operations are refused until they release it")
    return ""


def check_claim(proposal: Proposal, user) -> None:
    refusal = claim_refusal(proposal, user)
    if refusal:
        raise NotReviewable(refusal)


def require(transition, user) -> None:
    """The transition's own permission guard, applied to the person asking for it."""
    if not has_transition_perm(transition, user):
        raise PermissionDenied(f"{user.get_username()} may not {transition.__name__.replace('_', ' ')} this proposal")


def record(proposal: Proposal, reason: str, *, user=None, status_reason: str | None = None) -> None:
    """Save the proposal with its history row saying who and why."""
    if status_reason is not None:
        proposal.status_reason = status_reason
    if user is not None:
        proposal._history_user = user
    proposal._change_reason = reason
    proposal.save()


# ---- previewing -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LivePreview:
    """The live record read and diffed against a planned change, or why that failed."""

    preview: Preview | None
    error: str = ""


def read_live(proposal: Proposal) -> LivePreview:
    """Read the live record and diff it. Talks to the system of record, so never inside a transaction."""
    try:
        target = target_of(proposal.target_type, proposal.target_id)
        return LivePreview(preview_change(proposal.connector, proposal.action, target, proposal.changes))
    except (ConnectorError, ValueError) as exc:
        return LivePreview(None, f"{type(exc).__name__}: {exc}")


def apply_preview(proposal: Proposal, live: LivePreview) -> None:
    proposal.preview = live.preview.as_dict() if live.preview else {"changes": []}
    proposal.preview_before = live.preview.before if live.preview else {}
    proposal.preview_error = live.error
    proposal.change_hash = change_hash(proposal)


# ---- deciding and routing -------------------------------------------------------------------

Policy = tuple[engine.CompiledMatrix, list[engine.SwitchState]]


def decide(
    proposal: Proposal, *, review_required: bool = False, human_edit: engine.Tier | None = None,
    policy: Policy | None = None,
) -> dict[str, Any]:
    """The policy's decision as stored with the proposal, with every fact it saw, so a simulation replays it.

    A matrix that cannot be loaded decides nothing: the work is held for triage, saying why.
    """
    try:
        matrix, switches = policy or policy_state()
    except NoLiveMatrix as exc:
        return _undecided(str(exc))
    except Exception as exc:  # an unloadable matrix must hold work, not answer every agent with a 500
        return _undecided(f"the live approval matrix could not be loaded ({type(exc).__name__}: {exc})", alert=True)
    facts = decision_facts(proposal, matrix, review_required=review_required, human_edit=human_edit)
    decision = engine.decide(facts, matrix, switches)
    # The trace lists the rules the index let through and counts the others by field: small at any size.
    return {**decision.as_dict(), "facts": facts_as_dict(facts)}


def _undecided(reason: str, *, alert: bool = False) -> dict[str, Any]:
    if alert:
        alerts.error("holding proposals for triage: %s", reason)
    decision = engine.Decision(outcome="triage", matrix_version=0, rules=(), reasons=(reason,), tiers=(), trace=(),
                               max_age_minutes=DEFAULT_MAX_AGE_MINUTES)
    return {**decision.as_dict(), "facts": None}


def tiers_of(decision: dict[str, Any]) -> tuple[engine.Tier, ...]:
    return tuple(engine.Tier(**tier) for tier in decision["tiers"])


def route(proposal: Proposal, decision: dict[str, Any], *, to_review=None) -> None:
    """Put the decision into effect on a proposal the caller holds: transition, tiers, execution.

    `to_review` is the transition that reaches review when it is not the routing one (a release
    from triage, a force-review hold); the caller then saves with its own history reason.
    """
    proposal.decision = decision
    proposal.outcome, proposal.matrix_version = decision["outcome"], decision["matrix_version"]
    proposal.status_reason = "; ".join(decision["reasons"])
    proposal.expires_at = expiry(proposal, decision)
    outcome = proposal.outcome
    if outcome == "review" and to_review is not None:
        to_review()
    elif outcome in engine.RUNS_ALONE:  # auto, and on_the_loop (people review it after it ran)
        proposal.approved_hash = proposal.change_hash
        proposal.approve()
    elif outcome == "assisted":  # a recommendation: nothing is ever written for it
        proposal.recommend()
    else:
        {"block": proposal.block, "triage": proposal.hold_for_triage, "review": proposal.route_to_review}[outcome]()


def expiry(proposal: Proposal, decision: dict[str, Any]) -> datetime | None:
    """When work the decision sends to people expires if still waiting: its arrival plus the max age."""
    if decision["outcome"] not in ("review", "triage"):
        return None
    minutes = decision.get("max_age_minutes") or DEFAULT_MAX_AGE_MINUTES  # decisions stored before max ages
    return (proposal.created_at or timezone.now()) + timedelta(minutes=minutes)


def decide_and_route(proposal: Proposal, *, human_edit: engine.Tier | None = None, user=None) -> None:
    """Decide a new or edited change and put the decision into effect, saved with its reason."""
    route(proposal, decide(proposal, human_edit=human_edit))
    record(proposal, f"decided {proposal.outcome}: {proposal.status_reason}", user=user)
    after_routing(proposal)


def store_decided(proposal: Proposal, reason: str) -> None:
    """Store a new, previewed proposal already decided and routed, in as few statements as it takes.

    Deciding needs nothing from the stored row, so the row is inserted once, decided, with
    its two history rows (as submitted with `reason`, then as decided) in one statement, and
    its review tiers and their history rows in one statement each. Saving it first and then
    deciding and routing it cost a dozen more statements per submission (issue 14). The proposal
    comes back with what it was created with in its prefetch cache (see `_created_relations`).
    """
    submitted_at, submitted = timezone.now(), history_rows.snapshot(proposal)
    try:
        policy = policy_state()
    except Exception:  # decide() reads it again and says why it could not
        policy = None
    route(proposal, decide(proposal, policy=policy))
    tasks = []
    if proposal.status == Status.PENDING_REVIEW:
        tasks = new_tiers(proposal, tiers_of(proposal.decision), tier_groups(policy[0]) if policy else {})
    mark_active_tier(proposal, tasks[0] if tasks else None)
    proposal.skip_history_when_saving = True  # written below, both states in one statement
    try:
        proposal.save(force_insert=True)
    finally:
        del proposal.skip_history_when_saving
    submitted["created_at"] = proposal.created_at  # set by the INSERT
    decided_reason = f"decided {proposal.outcome}: {proposal.status_reason}"
    history_rows.write([history_rows.row(proposal, "+", reason, submitted_at, submitted),
                        history_rows.row(proposal, "~", decided_reason, timezone.now())], [proposal, proposal])
    if tasks:
        ReviewTask.objects.bulk_create(tasks)
        created = timezone.now()
        history_rows.write([history_rows.row(task, "+", None, created) for task in tasks], tasks)
        notifications.notify_task(tasks[0], notifications.ASSIGNED, new=True)  # as activate_next_tier does for later tiers
    _created_relations(proposal, tasks)
    if proposal.status == Status.APPROVED:
        enqueue_execution(proposal)
    if proposal.outcome in ("assisted", "on_the_loop"):  # as after_routing does for re-decided work
        open_oversight(proposal)


def _created_relations(proposal: Proposal, tasks: list[ReviewTask]) -> None:
    """Fill the prefetch cache of a proposal just created as prefetch_related would, with what is
    known without reading: its tiers, no reviews, no executions. The API answers a submission
    from it instead of reading back what it has just written."""
    def cached(manager, rows: list) -> Any:
        queryset = manager.all()
        queryset._result_cache, queryset._prefetch_done = rows, True
        return queryset

    for task in tasks:
        task._prefetched_objects_cache = {"reviews": cached(task.reviews, [])}
    proposal._prefetched_objects_cache = {
        "review_tasks": cached(proposal.review_tasks, tasks), "executions": cached(proposal.executions, []),
    }


def redecide_into_review(
    proposal: Proposal, to_review, *, why: str, status_reason: str | None = None, user=None,
    note: dict[str, Any] | None = None,
) -> None:
    """Held or approved-but-unstarted work goes (back) to people: decided afresh, at least review.

    `to_review` is the transition that gets it there (release from triage or stale, a force-review
    hold). Open tiers close first, and an earlier approval of the change no longer stands. The
    history reads "<why>: <status reason>"; the status reason defaults to the decision's reasons.
    """
    close_open_tiers(proposal)
    route(proposal, {**decide(proposal, review_required=True), **(note or {})}, to_review=to_review)
    proposal.approved_hash = ""
    if status_reason is not None:
        proposal.status_reason = status_reason
    record(proposal, f"{why}: {proposal.status_reason}", user=user)
    after_routing(proposal)


def after_routing(proposal: Proposal) -> None:
    """Once the routed proposal is saved: open its review tiers or queue its execution."""
    if proposal.status == Status.PENDING_REVIEW:
        open_tiers(proposal, tiers_of(proposal.decision))
    elif proposal.status == Status.APPROVED:
        enqueue_execution(proposal)
    if proposal.outcome in ("assisted", "on_the_loop"):
        open_oversight(proposal)


def open_oversight(proposal: Proposal) -> OversightTask | None:
    """An alert in its group's inbox (assisted), or on-the-loop work sampled for after-the-fact review.

    The first tier of the decision names the group (and whom an alert escalates to).
    """
    decision = proposal.decision
    if proposal.outcome == "on_the_loop" and not decision.get("sampled", True):
        return None
    tiers = tiers_of(decision) or floor_tiers()
    kind = OversightTask.Kind.ALERT if proposal.outcome == "assisted" else OversightTask.Kind.AFTER_THE_FACT
    escalation = tiers[0].escalation_group
    return OversightTask.objects.create(
        proposal=proposal, kind=kind, group=_group(tiers[0].group), escalation_group=_group(escalation) if escalation else None,
    )


# ---- review tiers ---------------------------------------------------------------------------

def open_tiers(proposal: Proposal, tiers: tuple[engine.Tier, ...]) -> None:
    first = proposal.review_tasks.count()  # after an edit, earlier tiers stay on record
    for position, tier in enumerate(tiers, start=first):
        ReviewTask.objects.create(
            proposal=proposal, position=position, group=_group(tier.group), required=tier.required, mode=tier.mode,
            sla_minutes=tier.sla_minutes, bulk_allowed=tier.bulk_allowed,
            remind_fraction=tier.remind_at, signed_links=tier.signed_links,
            escalation_group=_group(tier.escalation_group) if tier.escalation_group else None,
        )
    activate_next_tier(proposal)


def new_tiers(proposal: Proposal, tiers: tuple[engine.Tier, ...], known: dict[str, int]) -> list[ReviewTask]:
    """Unsaved review tasks of a new proposal for these tiers, the first active (its SLA running from now).

    `known` has the ids of groups the live matrix names (policies.services.tier_groups): those
    need no query; any other group is read or created.
    """
    names = {t.group for t in tiers} | {t.escalation_group for t in tiers if t.escalation_group}
    groups = {name: Group(pk=known[name], name=name) for name in names if name in known}
    groups.update(_groups(names - groups.keys()) if names - groups.keys() else {})
    tasks = [
        ReviewTask(
            proposal=proposal, position=position, group=groups[tier.group], required=tier.required, mode=tier.mode,
            sla_minutes=tier.sla_minutes, bulk_allowed=tier.bulk_allowed,
            remind_fraction=tier.remind_at, signed_links=tier.signed_links,
            escalation_group=groups[tier.escalation_group] if tier.escalation_group else None,
        )
        for position, tier in enumerate(tiers)
    ]
    if tasks:
        tasks[0].state = ReviewTask.State.ACTIVE
        tasks[0].due_at = timezone.now() + timedelta(minutes=tasks[0].sla_minutes)
        tasks[0].remind_at = notifications.remind_at(tasks[0])
    return tasks


def _groups(names: set[str]) -> dict[str, Group]:
    """The groups of these names in one query, creating any missing (a tier may name a new group)."""
    found = {group.name: group for group in Group.objects.filter(name__in=names)}
    for name in names - found.keys():
        found[name] = _group(name)
    return found


def _group(name: str) -> Group:
    return Group.objects.get_or_create(name=name)[0]


def activate_next_tier(proposal: Proposal) -> ReviewTask | None:
    task = proposal.review_tasks.filter(state=ReviewTask.State.WAITING).order_by("position").first()
    if task:
        task.state, task.due_at = ReviewTask.State.ACTIVE, timezone.now() + timedelta(minutes=task.sla_minutes)
        task.remind_at = notifications.remind_at(task)
        task.save()
        task.proposal = proposal
        notifications.notify_task(task, notifications.ASSIGNED)
    mark_active_tier(proposal, task)
    Proposal.objects.filter(pk=proposal.pk).update(**{name: getattr(proposal, name) for name in INBOX_COLUMNS})
    return task


def close_open_tiers(proposal: Proposal) -> None:
    proposal.review_tasks.filter(state__in=[ReviewTask.State.WAITING, ReviewTask.State.ACTIVE]).update(
        state=ReviewTask.State.CLOSED
    )
    mark_active_tier(proposal, None)
    for task in OversightTask.objects.filter(proposal=proposal, state__in=OPEN_OVERSIGHT):
        task.state, task._change_reason = OversightTask.State.CLOSED, "the proposal went to people before it ran"
        task.save()  # one row at most, saved one by one so its history records why


# The proposal's copy of its active tier, which the inbox finds open work by (indexed, no join).
INBOX_COLUMNS = ("due_at", "active_group_id", "escalated_to_id")


def mark_active_tier(proposal: Proposal, task: ReviewTask | None) -> None:
    """Copy the active tier (or none) onto the proposal: its group, its escalation group once escalated,
    its due time. Every step that opens, closes, pauses or escalates a tier calls this; the caller saves."""
    proposal.due_at = task.due_at if task else None
    proposal.active_group_id = task.group_id if task else None
    proposal.escalated_to_id = task.escalation_group_id if task and task.escalated_at else None


def active_task(proposal: Proposal) -> ReviewTask | None:
    return proposal.review_tasks.filter(state=ReviewTask.State.ACTIVE).select_related("group", "escalation_group").first()


def deciding_group_ids(user) -> frozenset[int]:
    """The groups whose tiers `user` may decide: the one answer to "who may decide" that verdicts and the
    inbox share (delegation adds the groups of the people who delegated to the user here)."""
    if not user.is_active:
        return frozenset()
    return frozenset(user.groups.values_list("pk", flat=True))


def can_review(task: ReviewTask, user) -> bool:
    groups = {task.group_id} | ({task.escalation_group_id} if task.escalated_at and task.escalation_group_id else set())
    return bool(groups & deciding_group_ids(user))


def floor_tiers() -> tuple[engine.Tier, ...]:
    """Who reviews when no rule says: the live matrix's default tiers, else operators."""
    try:
        return engine.review_floor(live_matrix().spec)
    except Exception:  # no (loadable) matrix: operators still need a tier to work in
        return engine.FALLBACK_TIERS


# ---- execution bookkeeping ------------------------------------------------------------------

def enqueue_execution(proposal: Proposal, *, attempt: int = 1, due_at: datetime | None = None) -> None:
    """Queue the write in the caller's transaction: an outbox row, published after the commit
    (never before: a rollback would leave it orphaned), or by the sweep if the broker is down
    or `due_at` (a retry's) is later. Nothing is queued where the integration carries out the
    action itself: the approval waits for its outcome report (execution.report_outcome).

    A canary (a known-bad proposal the board planted) is never executed: once approved it is
    closed instead, in the caller's transaction, and the approval stands as a missed catch."""
    if proposal.canary:
        proposal.cancel()
        why = getattr(proposal, "_change_reason", "") or "approved"
        record(proposal, f"{why}; a canary: closed without execution",
               status_reason="canary: approved by its reviewers, closed without execution")
        return
    if executed_by_client(proposal.connector):
        return
    args = [str(proposal.pk)] + ([attempt] if attempt > 1 else [])
    outbox.enqueue(outbox.EXECUTE, args, proposal=proposal, due_at=due_at)


def next_attempt(proposal: Proposal, kind: str) -> int:
    """The number of the next Execution row of this kind for the proposal (1, 2, ...)."""
    return proposal.executions.filter(kind=kind).count() + 1


