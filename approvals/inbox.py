"""The reviewer's inbox: whose open work is whose, most urgent first, and what a decision page shows beside it.

Open work is found through the proposal's own indexed copy of its active tier (`active_group`,
`escalated_to`, `due_at`, kept by `approvals.lifecycle.mark_active_tier`), so "my work" is one
indexed query without joins or DISTINCT; counts are capped, never a full-table COUNT; per-row
figures are annotated into the list's one query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections, transaction
from django.db.models import Case, Count, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, When
from django.utils import timezone

from approvals.lifecycle import deciding_group_ids
from approvals.models import OPEN_STATUSES, OversightTask, Proposal, Review, ReviewTask, Status

HOLD_MINUTES = 5  # how long opening a proposal holds it for the reviewer who opened it
COUNT_CAP = 1000  # queue counts stop here ("1000+"): a COUNT over a million rows is the slow part of a list
RECORD_WINDOW = 200  # the agent's most recent decided proposals of one action its rates are over
ATTENTION = (Status.TRIAGE, Status.STALE, Status.FAILED)


@dataclass(frozen=True)
class Queue:
    key: str
    label: str


QUEUES = (
    Queue("mine", "My work"),
    Queue("attention", "Triage, stale and failed"),
    Queue("triage", "Held for triage"),
    Queue("failed", "Failed"),
    Queue("open", "Everything open"),
    Queue("all", "All I can see"),
)


def reviewer_groups(user) -> frozenset[int]:
    """The groups whose work `user` may decide, read once per user object: a page asks for them in its
    queryset, its counts, its actions and its filters (seven queries before). Like the permissions Django's
    ModelBackend caches on the user, this lasts as long as the request's user; verdicts ask
    approvals.lifecycle afresh."""
    try:
        return user._inbox_groups
    except AttributeError:
        user._inbox_groups = deciding_group_ids(user)
        return user._inbox_groups


def may_decide_q(user) -> Q:
    """Proposals whose active tier `user` may decide now (its group, or its escalation group once escalated)."""
    theirs, escalated = _theirs_and_escalated(user)
    return theirs | escalated


def may_decide_apart(user) -> tuple[Q, Q]:
    """may_decide_q as two conditions that share no row (the escalated work not already the person's
    group's), to be counted apart and added up. Each count is then a walk of its own index that stops at
    the cap (0.3-0.7 ms at 1,000,000 proposals), where the OR's was a bitmap of all the group's waiting
    rows built before the first was counted (14-47 ms)."""
    theirs, escalated = _theirs_and_escalated(user)
    return theirs, escalated & ~Q(active_group__in=reviewer_groups(user))


def _theirs_and_escalated(user) -> tuple[Q, Q]:
    # Two whole conjunctions, each matching one (group, status, due_at) index: with the status test outside
    # the OR, SQLite's planner reads every pending proposal through the status index instead.
    groups = reviewer_groups(user)
    return (Q(active_group__in=groups, status=Status.PENDING_REVIEW),
            Q(escalated_to__in=groups, status=Status.PENDING_REVIEW))


def visible_q(user) -> Q:
    """What a reviewer who is not an operator may see: proposals with any tier of their groups.

    One semi-join driven by the tiers' group indexes (no DISTINCT join, no probe per proposal row)."""
    groups = reviewer_groups(user)
    tiers = ReviewTask.objects.filter(Q(group__in=groups) | Q(escalation_group__in=groups, escalated_at__isnull=False))
    # and the alerts and after-the-fact reviews (approvals.oversight) for their groups
    oversight = OversightTask.objects.filter(
        Q(group__in=groups) | Q(escalation_group__in=groups, state=OversightTask.State.ESCALATED))
    # One IN over both, not an OR of two: PostgreSQL cannot make an OR of subqueries a join, so it read every
    # proposal and probed two hashed sets (57 of "All"'s 93 ms of SQL at 100,000 proposals).
    return Q(pk__in=tiers.order_by().values("proposal_id").union(oversight.order_by().values("proposal_id"), all=True))


def landing_queue(user) -> str:
    """Where a person lands: superusers on everything open, operators on held and failed work, reviewers on theirs."""
    if user.is_superuser:
        return "open"
    if user.has_perm("approvals.operate_proposal"):
        return "attention"
    return "mine"


def queue_q(key: str, user) -> Q | None:
    """The filter of one queue; None for "all" (and anything unknown): no filter."""
    return {
        "mine": lambda: may_decide_q(user),
        "attention": lambda: Q(status__in=ATTENTION),
        "triage": lambda: Q(status__in=[Status.TRIAGE, Status.STALE]),
        "failed": lambda: Q(status=Status.FAILED),
        "open": lambda: Q(status__in=OPEN_STATUSES),
    }.get(key, lambda: None)()


def queues_for(user) -> tuple[Queue, ...]:
    """The queues worth a tab for this person."""
    keys = {"mine", "all"}
    if user.is_superuser or user.has_perm("approvals.operate_proposal"):
        keys |= {"attention", "triage", "failed", "open"}
    return tuple(queue for queue in QUEUES if queue.key in keys)


# What is counted: a queryset, or a tuple of querysets that share no row, counted apart and added up.
Counted = QuerySet | tuple[QuerySet, ...]


def capped_count(queryset: Counted, cap: int = COUNT_CAP) -> int:
    """How many rows, counting no further than cap + 1 (a LIMITed subquery, not a full COUNT)."""
    return capped_counts([(queryset, cap)])[0]


def capped_counts(counted: list[tuple[Counted, int]]) -> list[int]:
    """Each entry's row count, counting no further than its cap + 1, all in one statement: a round trip
    per count was most of what the queue tabs and the list's pages cost on a busy server. An entry of
    several querysets is the sum of theirs, each capped, the sum capped again."""
    parts, columns_of = [], []
    for querysets, cap in counted:
        columns = []
        for queryset in querysets if isinstance(querysets, tuple) else (querysets,):
            part = _capped_sql(queryset, cap)
            if part not in parts:  # the list of a queue is that queue's tab: counted once
                parts.append(part)
            columns.append(parts.index(part))
        columns_of.append((columns, cap))
    selected = [f"(SELECT COUNT(*) FROM ({sql}) AS capped_{n})" if sql else "0" for n, (sql, _) in enumerate(parts)]
    first = counted[0][0]
    with connections[(first[0] if isinstance(first, tuple) else first).db].cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(selected)}", [param for _, part_params in parts for param in part_params])
        row = cursor.fetchone()
    return [min(sum(row[column] for column in columns), cap + 1) for columns, cap in columns_of]


def _capped_sql(queryset: QuerySet, cap: int) -> tuple[str, tuple]:
    """(SQL, params) selecting at most cap + 1 of the queryset's rows; ("", ()) if it can match nothing."""
    query = queryset.order_by().values("pk")[: cap + 1].query
    try:
        sql, params = query.get_compiler(using=queryset.db).as_sql()
    except EmptyResultSet:  # a filter that matches nothing by construction (a person in no group)
        return "", ()
    return sql, tuple(params)


def queue_querysets(user, visible: QuerySet, everything: QuerySet) -> list[tuple[Queue, Counted]]:
    """Each of the person's queues with what it lists, to be counted. My work is counted on its own
    indexes (`everything`, unnarrowed: it is always within what the person may see), its two
    conditions apart (may_decide_apart)."""
    listed: list[tuple[Queue, Counted]] = []
    for queue in queues_for(user):
        if queue.key == "mine":
            listed.append((queue, tuple(everything.filter(part) for part in may_decide_apart(user))))
            continue
        condition = queue_q(queue.key, user)
        listed.append((queue, visible.filter(condition) if condition is not None else visible))
    return listed


# ---- ordering and row data ------------------------------------------------------------------

IMPACT_RANK = Case(
    When(customer_impact="high", then=Value(3)), When(customer_impact="medium", then=Value(2)),
    When(customer_impact="low", then=Value(1)), default=Value(0), output_field=IntegerField(),
)


# Overdue first, then due soonest (no due time last, on every database), then the larger amount and the
# greater customer impact, then the oldest. "impact_rank" is an alias with_ranks adds.
URGENT_ORDER = (F("due_at").asc(nulls_last=True), F("amount").desc(nulls_last=True), F("impact_rank").desc(), "created_at")
# Open work before finished work ("closed" is an alias with_ranks adds), the most urgent first, then the newest.
OPEN_FIRST_ORDER = ("closed", F("due_at").asc(nulls_last=True), "-created_at")


def with_ranks(queryset: QuerySet) -> QuerySet:
    is_closed = Case(When(status__in=OPEN_STATUSES, then=Value(0)), default=Value(1), output_field=IntegerField())
    return queryset.alias(impact_rank=IMPACT_RANK, closed=is_closed)


def urgent_first(queryset: QuerySet) -> QuerySet:
    return with_ranks(queryset).order_by(*URGENT_ORDER, "pk")


def open_first(queryset: QuerySet) -> QuerySet:
    return with_ranks(queryset).order_by(*OPEN_FIRST_ORDER, "pk")


# The proposal columns a row shows (approvals.admin_inbox.InboxMixin.get_list_display, the checkbox's label,
# the masking of sensitive values), of about fifty: the rest (the decision, the evidence, the previews before,
# what the agent observed) is JSON and text a row that the database sends and the driver parses for nothing.
ROW_FIELDS = ("id", "agent", "connector", "action", "target_type", "target_id", "changes", "amount", "currency",
              "confidence", "customer_impact", "preview", "status", "due_at", "active_group", "escalated_to",
              "held_by", "held_until", "claimed_by")
# What the row's people and groups show of them: their names.
ROW_RELATED_FIELDS = ("connector__slug", "connector__kind", "connector__config", "active_group__name",
                      "escalated_to__name", "held_by__username", "claimed_by__username")


def with_row_data(queryset: QuerySet) -> QuerySet:
    """Everything a row shows, in the list's one query: the active tier's group, required and approved count,
    whether it allows bulk approval, who holds it."""
    # Ordered by position alone: the tiers' default order leads with their proposal's columns, which are the
    # same for every tier of one proposal, and cost a join to the proposal in each of the three subqueries.
    active = ReviewTask.objects.filter(proposal=OuterRef("pk"), state=ReviewTask.State.ACTIVE).order_by("position")
    # Counted on the active tier's own key: joined to the tiers by state, SQLite's planner walked every
    # active tier for each row (10,000 x 50 probes, half a second at 100,000 proposals).
    approvals = (Review.objects.filter(task=OuterRef("tier_id"), verdict=Review.Verdict.APPROVE,
                                       change_hash=OuterRef("change_hash"))
                 .order_by().values("task").annotate(n=Count("pk")).values("n"))
    return (with_ranks(queryset)
            .select_related(None).select_related("connector", "active_group", "escalated_to", "held_by", "claimed_by")
            .only(*ROW_FIELDS, *ROW_RELATED_FIELDS)
            .alias(tier_id=Subquery(active.values("pk")[:1]))
            .annotate(tier_required=Subquery(active.values("required")[:1]),
                      tier_bulk=Subquery(active.values("bulk_allowed")[:1]),
                      tier_approvals=Subquery(approvals[:1], output_field=IntegerField())))


def bulk_possible(user) -> bool:
    """Whether any active tier the person may decide allows bulk approval (one indexed query)."""
    groups = reviewer_groups(user)
    return ReviewTask.objects.filter(state=ReviewTask.State.ACTIVE, bulk_allowed=True).filter(
        Q(group__in=groups) | Q(escalation_group__in=groups, escalated_at__isnull=False)).exists()


# ---- what a row says -----------------------------------------------------------------------

def confidence_band(confidence: float | None) -> str:
    if confidence is None:
        return "-"
    return "high" if confidence >= 0.9 else "medium" if confidence >= 0.7 else "low"


def relative(delta: timedelta) -> str:
    minutes = round(abs(delta).total_seconds() / 60)
    if minutes < 60:
        return f"{max(minutes, 1)} min"
    if minutes < 48 * 60:
        return f"{minutes // 60} h"
    return f"{minutes // (24 * 60)} d"


def due_text(due_at: datetime | None, now: datetime) -> tuple[str, bool]:
    """("due in 3 h" | "overdue by 20 min" | "-", overdue?)."""
    if due_at is None:
        return "-", False
    if due_at < now:
        return f"overdue by {relative(now - due_at)}", True
    return f"due in {relative(due_at - now)}", False


def one_line(proposal: Proposal, hidden: frozenset[str]) -> str:
    """What changes, in one line: "refund order/A-1001: status → refunded, refund_amount → ••••"."""
    from approvals.masking import MASK

    target = f" {proposal.target_type}/{proposal.target_id}" if proposal.target_id else ""
    changes = proposal.changes if isinstance(proposal.changes, dict) else {}
    parts = [f"{name} → {MASK if name in hidden else _short(value)}" for name, value in list(changes.items())[:4]]
    more = f", +{len(changes) - 4} more" if len(changes) > 4 else ""
    return f"{proposal.action}{target}" + (f": {', '.join(parts)}{more}" if parts else "")


def _short(value: Any, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def holders(proposal: Proposal, now: datetime) -> str:
    """Who holds it: an operator's take-over, or a reviewer's hold while it lasts."""
    names = []
    if proposal.claimed_by_id:
        names.append(f"{proposal.claimed_by.get_username()} (taken over)")
    if proposal.held_by_id and proposal.held_until and proposal.held_until > now:
        names.append(f"{proposal.held_by.get_username()} (for {relative(proposal.held_until - now)})")
    return ", ".join(names)


# ---- holding, and the next item ---------------------------------------------------------------

def hold(proposal_id: Any, user, now: datetime | None = None) -> str:
    """Opening a proposal to decide it holds it for HOLD_MINUTES, unless someone else's hold still runs.

    Returns who holds it now ('' if nobody else). A hold is advisory (others see it, and "next"
    skips it); it is not state: no history row, the proposal's status is untouched.
    """
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        free = Q(held_by__isnull=True) | Q(held_by=user) | Q(held_until__lte=now) | Q(held_until__isnull=True)
        taken = Proposal.objects.filter(Q(pk=proposal_id) & free).update(held_by=user, held_until=now + timedelta(minutes=HOLD_MINUTES))
        if taken:
            return ""
        holder = Proposal.objects.filter(pk=proposal_id).values_list("held_by__username", flat=True).first()
        return holder or ""


def next_for(user, proposals: QuerySet, after: Any, now: datetime | None = None) -> Any:
    """The most urgent proposal of the person's work after this one, skipping what others hold; None when done.

    `proposals` need not be narrowed to what the person may see: their work is always visible to them."""
    now = now or timezone.now()
    held_by_others = Q(held_until__gt=now) & ~Q(held_by=user) & Q(held_by__isnull=False)
    candidates = urgent_first(proposals.filter(may_decide_q(user)).exclude(pk=after).exclude(held_by_others))
    return candidates.values_list("pk", flat=True).first()


# ---- beside a proposal on its decision page ---------------------------------------------------

@dataclass(frozen=True)
class AgentRecord:
    """How people decided the agent's recent proposals of one action (over the last RECORD_WINDOW decided)."""

    decided: int
    approved: int
    edited: int
    rejected: int

    def _rate(self, count: int) -> str:
        return f"{round(100 * count / self.decided)}%" if self.decided else "-"

    @property
    def approved_rate(self) -> str:
        return self._rate(self.approved)

    @property
    def edited_rate(self) -> str:
        return self._rate(self.edited)

    @property
    def rejected_rate(self) -> str:
        return self._rate(self.rejected)


DECIDED_BY_PEOPLE = (Status.APPROVED, Status.EXECUTING, Status.EXECUTED, Status.DRY_RUN, Status.FAILED,
                     Status.ROLLED_BACK, Status.REJECTED, Status.STALE, Status.HANDLED_MANUALLY)


def agent_record(agent: str, action: str, exclude: Any = None) -> AgentRecord:
    """One bounded query over the (agent, action, created_at) index: reviewed proposals only."""
    recent = (Proposal.objects.filter(agent=agent, action=action, status__in=DECIDED_BY_PEOPLE,
                                      outcome__in=("review", "triage"))
              .exclude(pk=exclude).order_by("-created_at").values_list("status", "edited")[:RECORD_WINDOW])
    rows = list(recent)
    rejected = sum(1 for status, _ in rows if status == Status.REJECTED)
    edited = sum(1 for status, was_edited in rows if was_edited and status != Status.REJECTED)
    return AgentRecord(decided=len(rows), approved=len(rows) - rejected - edited, edited=edited, rejected=rejected)


def same_record(proposal: Proposal, limit: int = 10) -> list[Proposal]:
    """Other open proposals on the same record of the same system."""
    if not proposal.target_id:
        return []
    return list(Proposal.objects.filter(
        connector_id=proposal.connector_id, target_type=proposal.target_type, target_id=proposal.target_id,
        status__in=OPEN_STATUSES,
    ).exclude(pk=proposal.pk).order_by("created_at").only("pk", "agent", "action", "status", "created_at")[:limit])
