"""What a governance board reads to judge whether oversight works: the numbers behind the dashboard.

Read-only, and fast at a million proposals: the finished days' figures come from a daily rollup
(`approvals.board_days`, refreshed by beat), today's are counted live through indexes, pending work
(queues, open proposals) is counted live; a fixed number of queries whatever the number of
proposals (`tests/test_board_room.py` counts them). The functions below that take a `since`
(`outcomes`, `agent_rates`, `reviewer_oversight`, `wait_percentiles`) are the live computation over
the whole window: the definition the rollup must equal (`dashboard(live=True)`,
`tests/test_board_days.py`). Canary proposals are the board's own tests of reviewers: they count for
reviewers (caught or missed) and never as an agent's work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import Avg, CharField, Count, F, FloatField, Func, Q, Window
from django.db.models.functions import Round, RowNumber
from django.utils import timezone

from approvals.models import Proposal, Review, ReviewTask, Status
from approvals import board_days
from connectors.models import Execution

OUTCOME_LABELS = {"auto": "ran automatically", "review": "reviewed", "triage": "triaged", "block": "blocked"}
REACHED_PEOPLE = ("review", "triage")  # outcomes that put a proposal before people
DECIDED_BY_PEOPLE = (
    Status.APPROVED, Status.EXECUTING, Status.EXECUTED, Status.DRY_RUN, Status.FAILED, Status.STALE,
    Status.ROLLED_BACK, Status.HANDLED_MANUALLY, Status.REJECTED,
)
REVERSED = (Status.ROLLED_BACK, Status.REJECTED)  # an approval later rolled back, or rejected on a later tier
RULE_WINDOW = 200  # approve-as-rule looks at an agent's last this many human-decided proposals of an action
RULE_MIN_SAMPLE = 20  # and never suggests a rule from fewer clean ones than this
RULE_DAYS = 30  # and only at those of the last this many days: older behaviour says little about today's agent


class SecondsBetween(Func):
    """later - earlier in seconds, computed natively by the database (Django's own datetime subtraction
    calls a Python function per row on SQLite, which made the dashboard take seconds at 100,000 rows)."""

    output_field = FloatField()
    arity = 2

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="((julianday(%(expressions)s)) * 86400.0)",
                           arg_joiner=") - julianday(", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="EXTRACT(EPOCH FROM (%(expressions)s))", arg_joiner=" - ", **extra)


class UtcDay(Func):
    """The UTC calendar day of a timestamp as 'YYYY-MM-DD' text, natively (see SecondsBetween: TruncDate
    is a Python function per row on SQLite). The project's TIME_ZONE is UTC."""

    output_field = CharField()
    arity = 1

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="substr(%(expressions)s, 1, 10)", **extra)

    def as_postgresql(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, template="to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
                           **extra)


@dataclass(frozen=True)
class Queue:
    group: str
    pending: int
    overdue: int


@dataclass(frozen=True)
class AgentRate:
    agent: str
    action: str
    connector: str
    decided: int
    approved: int
    edited: int
    rejected: int

    @property
    def override_rate(self) -> float:
        return (self.edited + self.rejected) / self.decided if self.decided else 0.0

    def share(self, count: int) -> float:
        return count / self.decided if self.decided else 0.0


@dataclass(frozen=True)
class ReviewerRecord:
    reviewer: str
    decisions: int
    approvals: int
    reversed: int
    canaries: int
    caught: int
    mean_wait: timedelta | None

    @property
    def approval_rate(self) -> float:
        return self.approvals / self.decisions if self.decisions else 0.0

    @property
    def catch_rate(self) -> float | None:
        return self.caught / self.canaries if self.canaries else None


@dataclass(frozen=True)
class RuleSuggestion:
    """Approve-as-rule: the agent's last `seen` human-decided proposals of this action had no override
    at or above `confidence_min` (`clean` of them)."""

    agent: str
    action: str
    connector: str
    confidence_min: float
    clean: int
    seen: int
    overrides: int

    @property
    def sentence(self) -> str:
        return (f"auto-approve {self.action} by {self.agent} with confidence >= {self.confidence_min:.2f}: "
                f"0 overrides in the last {self.clean}")


@dataclass
class Dashboard:
    since: datetime
    now: datetime
    days: list = field(default_factory=list)
    queues: list[Queue] = field(default_factory=list)
    open_by_status: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    outcomes_by_day: dict[str, list[int]] = field(default_factory=dict)
    failed_by_day: list[int] = field(default_factory=list)
    rates: list[AgentRate] = field(default_factory=list)
    wait_median: timedelta | None = None
    wait_p95: timedelta | None = None
    reviewers: list[ReviewerRecord] = field(default_factory=list)
    suggestions: list[RuleSuggestion] = field(default_factory=list)

    @property
    def overdue(self) -> int:
        return sum(q.overdue for q in self.queues)

    @property
    def decided(self) -> int:
        return sum(self.outcomes.values())

    def outcome_share(self, outcome: str) -> float:
        return self.outcomes.get(outcome, 0) / self.decided if self.decided else 0.0


def dashboard(now: datetime | None = None, days: int = 14, live: bool = False) -> Dashboard:
    """The board's dashboard for the last `days` days (pending work is as of now). `live` counts every
    figure from the record instead of the rollup: the same figures, slower."""
    now = now or timezone.now()
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    board = Dashboard(since=since, now=now, days=[(since + timedelta(days=n)).date() for n in range(days)])
    board.queues = queues(now)
    board.open_by_status = open_by_status()
    if live:
        board.outcomes, board.outcomes_by_day = outcomes(since, board.days)
        board.failed_by_day = failed_executions(since, board.days)
        board.rates = agent_rates(since)
        board.reviewers = reviewer_oversight(since)
        board.wait_median, board.wait_p95 = wait_percentiles(since, sum(r.decisions for r in board.reviewers))
        board.suggestions = rule_suggestions(now=now, live=True)
        return board
    rule_since = now - timedelta(days=RULE_DAYS)
    rows = board_days.rows(since, now, since_proposals=rule_since)
    proposals = [row for row in rows.proposals if row["day"] >= board.days[0]]
    board.outcomes, board.outcomes_by_day = _outcomes_from(proposals, board.days)
    board.failed_by_day = [rows.failed.get(day, 0) for day in board.days]
    board.rates = _rates_from(proposals)
    board.reviewers = _reviewers_from(rows.reviewers)
    board.wait_median, board.wait_p95 = _percentiles_from(rows.waits)
    # Only pairs with a human decision: seeking the last 200 of a pair that has none reads all its rows.
    groups = {(r["agent"], r["action"], r["connector_id"]) for r in rows.proposals
              if r["outcome"] in REACHED_PEOPLE and r["decided"] and r["day"] >= rule_since.date()}
    board.suggestions = rule_suggestions(now=now, groups=groups)
    return board


def _outcomes_from(rows: list[dict], days: list) -> tuple[dict[str, int], dict[str, list[int]]]:
    index = {day: n for n, day in enumerate(days)}
    totals: dict[str, int] = {o: 0 for o in OUTCOME_LABELS}
    by_day: dict[str, list[int]] = {o: [0] * len(days) for o in OUTCOME_LABELS}
    for row in rows:
        outcome = row["outcome"]
        totals[outcome] = totals.get(outcome, 0) + row["proposals"]
        series = by_day.setdefault(outcome, [0] * len(days))
        if row["day"] in index:
            series[index[row["day"]]] += row["proposals"]
    return totals, by_day


def _rates_from(rows: list[dict]) -> list[AgentRate]:
    summed: dict[tuple, list[int]] = {}
    for row in rows:
        if row["outcome"] in REACHED_PEOPLE and row["decided"]:
            counts = summed.setdefault((row["agent"], row["action"], row["slug"]), [0, 0, 0])
            counts[0] += row["decided"]
            counts[1] += row["edited"]
            counts[2] += row["rejected"]
    rates = [AgentRate(agent, action, connector, decided, decided - edited - rejected, edited, rejected)
             for (agent, action, connector), (decided, edited, rejected) in summed.items()]
    return sorted(rates, key=lambda r: (r.agent, r.action, r.connector or ""))


def _reviewers_from(rows: list[dict]) -> list[ReviewerRecord]:
    names = ("decisions", "approvals", "reversed", "canaries", "caught", "wait_seconds")
    summed: dict[str, list[float]] = {}
    for row in rows:
        counts = summed.setdefault(row["username"], [0] * len(names))
        for n, name in enumerate(names):
            counts[n] += row[name]
    records = [ReviewerRecord(username, decisions, approvals, reversed_, canaries, caught,
                              _as_timedelta(wait / decisions) if decisions else None)
               for username, (decisions, approvals, reversed_, canaries, caught, wait) in summed.items()]
    return sorted(records, key=lambda r: r.reviewer)


def _percentiles_from(rows: list[dict]) -> tuple[timedelta | None, timedelta | None]:
    """Nearest-rank median and 95th percentile from the per-second histogram."""
    histogram: dict[int, int] = {}
    for row in rows:
        histogram[row["seconds"]] = histogram.get(row["seconds"], 0) + row["verdicts"]
    count = sum(histogram.values())
    if not count:
        return None, None
    ranks = {fraction: max(math.ceil(fraction * count) - 1, 0) for fraction in (0.5, 0.95)}
    found: dict[float, timedelta] = {}
    seen = 0
    for seconds in sorted(histogram):
        seen += histogram[seconds]
        for fraction, rank in ranks.items():
            if fraction not in found and rank < seen:
                found[fraction] = timedelta(seconds=seconds)
    return found[0.5], found[0.95]


def queues(now: datetime) -> list[Queue]:
    """Pending and overdue per review group, from the active tiers (indexed on state)."""
    rows = (ReviewTask.objects.filter(state=ReviewTask.State.ACTIVE).values("group__name")
            .annotate(pending=Count("pk"), overdue=Count("pk", filter=Q(due_at__lt=now))).order_by("group__name"))
    return [Queue(r["group__name"], r["pending"], r["overdue"]) for r in rows]


def open_by_status() -> dict[str, int]:
    held = (Status.TRIAGE, Status.STALE, Status.FAILED, Status.APPROVED, Status.EXECUTING)
    rows = Proposal.objects.filter(status__in=held).values("status").annotate(n=Count("pk")).order_by()
    found = {r["status"]: r["n"] for r in rows}
    return {status.value: found.get(status, 0) for status in held}


def outcomes(since: datetime, days: list) -> tuple[dict[str, int], dict[str, list[int]]]:
    """How the policy decided the agents' proposals in the period, in total and per day."""
    rows = (Proposal.objects.filter(created_at__gte=since, canary=False).exclude(outcome="")
            .annotate(day=UtcDay("created_at")).values("day", "outcome").annotate(n=Count("pk")).order_by())
    index = {day.isoformat(): n for n, day in enumerate(days)}
    totals: dict[str, int] = {o: 0 for o in OUTCOME_LABELS}
    by_day: dict[str, list[int]] = {o: [0] * len(days) for o in OUTCOME_LABELS}
    for row in rows:
        outcome = row["outcome"]
        totals[outcome] = totals.get(outcome, 0) + row["n"]
        series = by_day.setdefault(outcome, [0] * len(days))
        if row["day"] in index:
            series[index[row["day"]]] += row["n"]
    return totals, by_day


def failed_executions(since: datetime, days: list) -> list[int]:
    rows = (Execution.objects.filter(started_at__gte=since, outcome=Execution.Outcome.FAILED)
            .annotate(day=UtcDay("started_at")).values("day").annotate(n=Count("pk")).order_by())
    index = {day.isoformat(): n for n, day in enumerate(days)}
    series = [0] * len(days)
    for row in rows:
        if row["day"] in index:
            series[index[row["day"]]] += row["n"]
    return series


def agent_rates(since: datetime) -> list[AgentRate]:
    """Per agent and action, what people did with the proposals put before them: approved as they
    were, edited, rejected. Edited and rejected together are the override rate."""
    rows = (Proposal.objects.filter(created_at__gte=since, canary=False, outcome__in=REACHED_PEOPLE,
                                    status__in=DECIDED_BY_PEOPLE)
            .values("agent", "action", "connector__slug")
            .annotate(n_decided=Count("pk"), n_edited=Count("pk", filter=Q(edited=True)),
                      n_rejected=Count("pk", filter=Q(status=Status.REJECTED, edited=False)))
            .order_by("agent", "action"))
    return [AgentRate(r["agent"], r["action"], r["connector__slug"], r["n_decided"],
                      r["n_decided"] - r["n_edited"] - r["n_rejected"], r["n_edited"], r["n_rejected"]) for r in rows]


def _wait() -> SecondsBetween:
    return SecondsBetween(F("created_at"), F("proposal__created_at"))


def reviewer_oversight(since: datetime) -> list[ReviewerRecord]:
    """Per reviewer: verdicts, approval rate, approvals later reversed, canaries caught, time to verdict."""
    rows = (Review.objects.filter(created_at__gte=since).values("reviewer__username")
            .annotate(decisions=Count("pk"), approvals=Count("pk", filter=Q(verdict=Review.Verdict.APPROVE)),
                      reversed=Count("pk", filter=Q(verdict=Review.Verdict.APPROVE, proposal__status__in=REVERSED,
                                                    proposal__canary=False)),
                      canaries=Count("pk", filter=Q(proposal__canary=True)),
                      caught=Count("pk", filter=Q(proposal__canary=True, verdict=Review.Verdict.REJECT)),
                      wait=Avg(_wait()))
            .order_by("reviewer__username"))
    return [ReviewerRecord(r["reviewer__username"], r["decisions"], r["approvals"], r["reversed"], r["canaries"],
                           r["caught"], _as_timedelta(r["wait"])) for r in rows]


def _as_timedelta(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=round(float(seconds), 3))


def wait_percentiles(since: datetime, count: int) -> tuple[timedelta | None, timedelta | None]:
    """Median and 95th percentile of the time from submission to a reviewer's verdict (nearest rank, in
    whole seconds: the page shows minutes, and the rollup keeps a histogram by the second)."""
    if not count:
        return None, None
    ordered = Review.objects.filter(created_at__gte=since).annotate(wait=Round(_wait())).order_by("wait")

    def at(fraction: float) -> timedelta | None:
        rank = max(math.ceil(fraction * count) - 1, 0)
        return _as_timedelta(ordered.values_list("wait", flat=True)[rank:rank + 1].first())

    return at(0.5), at(0.95)


def rule_suggestions(window: int = RULE_WINDOW, min_sample: int = RULE_MIN_SAMPLE, now: datetime | None = None,
                     live: bool = False, groups: set[tuple] | None = None) -> list[RuleSuggestion]:
    """Approve-as-rule candidates: per agent and action, the lowest confidence above every override
    among its last `window` human-decided proposals (of the last RULE_DAYS days), if at least
    `min_sample` of them were clean. The agents and actions come from the rollup (and today's
    proposals); their last `window` each in one query, each part a seek on (agent, action, created_at).
    `groups` (agent, action, connector id) are those pairs when the caller has them already. `live`
    ranks every proposal of the period with a window function instead: the same answer, slower."""
    now = now or timezone.now()
    since = now - timedelta(days=RULE_DAYS)
    decided = Proposal.objects.filter(created_at__gte=since, canary=False, outcome__in=REACHED_PEOPLE,
                                      status__in=DECIDED_BY_PEOPLE)
    columns = ("agent", "action", "connector__slug", "confidence", "edited", "status")
    if live:
        found = list(decided.annotate(rank=Window(RowNumber(), partition_by=[F("agent"), F("action"), F("connector_id")],
                                                  order_by=[F("created_at").desc(), F("pk").desc()]))
                     .filter(rank__lte=window).values_list(*columns))
    else:
        if groups is None:
            groups = board_days.proposal_groups(since, now, REACHED_PEOPLE)
        found = _last_of_each(decided, sorted(groups, key=lambda g: (g[0], g[1], g[2] or 0)), window, columns)
    seen_by_group: dict[tuple[str, str, str], list[tuple[float, bool]]] = {}
    for agent, action, connector, confidence, edited, status in found:
        seen_by_group.setdefault((agent, action, connector), []).append(
            (confidence, bool(edited) or status == Status.REJECTED))
    out = []
    for (agent, action, connector), seen in sorted(seen_by_group.items(), key=lambda item: tuple(k or "" for k in item[0])):
        suggestion = _suggest(agent, action, connector, seen, min_sample)
        if suggestion is not None:
            out.append(suggestion)
    return out


def _last_of_each(decided, groups: list[tuple], window: int, columns: tuple) -> list[tuple]:
    """The newest `window` rows of each (agent, action, connector id) group, as one UNION ALL of
    limited seeks (SQLite refuses LIMIT inside a compound through the ORM, so it is composed here)."""
    if not groups:
        return []
    parts, params = [], []
    for n, (agent, action, connector) in enumerate(groups):
        part = (decided.filter(agent=agent, action=action, connector_id=connector)
                .order_by("-created_at", "-pk").values_list(*columns)[:window])
        sql, part_params = part.query.sql_with_params()
        parts.append(f"SELECT * FROM ({sql}) AS last_{n}")
        params.extend(part_params)
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        return cursor.fetchall()


def _suggest(agent: str, action: str, connector: str, seen: list[tuple[float, bool]], min_sample: int) -> RuleSuggestion | None:
    overridden = [c for c, changed in seen if changed]
    highest_override = max(overridden, default=-1.0)
    clean = sorted(c for c, changed in seen if not changed and c > highest_override)
    if len(clean) < min_sample:
        return None
    threshold = math.floor(clean[0] * 100) / 100  # a round number a board reads, still above every override
    if threshold <= highest_override:
        threshold = clean[0]
    return RuleSuggestion(agent, action, connector, threshold, len(clean), len(seen), len(overridden))


def rule_vocabulary(days: int = 90) -> dict[str, list[str]]:
    """What a board picks from when writing a rule: connectors, the actions they offer, and the agents
    that proposed anything lately (indexed on created_at and agent) or have an integration of that name."""
    from approvals.models import Integration
    from connectors.models import Connector
    from connectors.services import supported_actions

    connectors = list(Connector.objects.order_by("slug"))
    recent = Proposal.objects.filter(created_at__gte=timezone.now() - timedelta(days=days), canary=False)
    agents = set(recent.values_list("agent", flat=True).distinct().order_by()) | set(
        Integration.objects.values_list("name", flat=True))
    return {"connectors": [c.slug for c in connectors],
            "actions": sorted({action for c in connectors for action in supported_actions(c)}),
            "agents": sorted(agents)}
