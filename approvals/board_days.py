"""The board's figures per UTC day: rolled up for finished days, counted live for the unfinished tail.

A day's figures change after the day ends: a proposal submitted on Monday is decided on Wednesday, an
approval is rolled back a week later. Every such change of a proposal writes a row to its history
(the audit trail, indexed on `history_date`), so `refresh` (beat, every BOARD_REFRESH_SECONDS) rolls
up again exactly the days whose proposals, verdicts or executions changed since the last check, and
the days not rolled up yet. The dashboard rolls up a missing finished day itself, and counts from the
first instant of today (the tail) live, so the figures equal the live computation over the whole
window (`tests/test_board_days.py`) as of the last refresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone as dt_timezone

from django.db import transaction
from django.db.models import Count, F, Min, Q, Sum
from django.db.models.functions import Round
from django.utils import timezone

from approvals.board_models import BoardDay, BoardDayProposals, BoardDayReviewer, BoardDayWait
from approvals.models import Proposal, Review, Status
from connectors.models import Execution

WINDOW_DAYS = 30  # the longest window a figure reads (approve-as-rule's RULE_DAYS)
MARGIN = timedelta(minutes=10)  # a transaction that wrote its history row before a check may commit after it
ROLLED = (BoardDayProposals, BoardDayReviewer, BoardDayWait)


def decided_by_people() -> tuple:
    from approvals.board import DECIDED_BY_PEOPLE

    return DECIDED_BY_PEOPLE


@dataclass
class DayRows:
    """The figures' rows, each with its `day` (a date): from the rollup, the live tail, or both."""

    proposals: list[dict]
    reviewers: list[dict]
    waits: list[dict]
    failed: dict[date, int]


def start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=dt_timezone.utc)


def utc_day(moment: datetime) -> date:
    return moment.astimezone(dt_timezone.utc).date()


def tail_start(since: datetime, now: datetime) -> datetime:
    """Where live counting starts: today (or `now`'s day, if earlier); never before `since`."""
    return max(since, start_of(min(utc_day(timezone.now()), utc_day(now))))


def _day(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def _wait():
    from approvals.board import SecondsBetween

    return SecondsBetween(F("created_at"), F("proposal__created_at"))


def count_proposals(start: datetime, end: datetime | None = None) -> list[dict]:
    """The agents' proposals created from `start` (to `end`), per day, agent, action, connector and outcome."""
    from approvals.board import UtcDay

    decided = Q(status__in=decided_by_people())
    rows = Proposal.objects.filter(created_at__gte=start, canary=False).exclude(outcome="")
    if end is not None:
        rows = rows.filter(created_at__lt=end)
    rows = (rows.annotate(day=UtcDay("created_at"), slug=F("connector__slug"))
            .values("day", "agent", "action", "connector_id", "slug", "outcome")
            .annotate(n_proposals=Count("pk"), n_decided=Count("pk", filter=decided),
                      n_edited=Count("pk", filter=decided & Q(edited=True)),
                      n_rejected=Count("pk", filter=Q(status=Status.REJECTED, edited=False)))
            .order_by())
    counts = ("proposals", "decided", "edited", "rejected")  # annotated as n_*: `edited` is also a column
    return [{"day": _day(row["day"]), "agent": row["agent"], "action": row["action"], "connector_id": row["connector_id"],
             "slug": row["slug"], "outcome": row["outcome"], **{name: row[f"n_{name}"] for name in counts}} for row in rows]


def _reviews(start: datetime, end: datetime | None):
    rows = Review.objects.filter(created_at__gte=start)
    return rows if end is None else rows.filter(created_at__lt=end)


def count_reviewers(start: datetime, end: datetime | None = None) -> list[dict]:
    """Verdicts given from `start` (to `end`), per day and reviewer."""
    from approvals.board import REVERSED, UtcDay

    approve = Q(verdict=Review.Verdict.APPROVE)
    # Grouped by the (unique) username, the id carried along: grouped by reviewer_id, SQLite without
    # statistics walks the whole reviewer index in order instead of seeking today's verdicts by time.
    rows = (_reviews(start, end).annotate(day=UtcDay("created_at"), username=F("reviewer__username"))
            .values("day", "username")
            .annotate(reviewer_id=Min("reviewer_id"), decisions=Count("pk"), approvals=Count("pk", filter=approve),
                      reversed=Count("pk", filter=approve & Q(proposal__status__in=REVERSED, proposal__canary=False)),
                      canaries=Count("pk", filter=Q(proposal__canary=True)),
                      caught=Count("pk", filter=Q(proposal__canary=True, verdict=Review.Verdict.REJECT)),
                      wait_seconds=Sum(_wait()))
            .order_by())
    return [{**row, "day": _day(row["day"]), "wait_seconds": float(row["wait_seconds"] or 0.0)} for row in rows]


def count_waits(start: datetime, end: datetime | None = None) -> list[dict]:
    """Verdicts given from `start` (to `end`) per day and whole seconds waited since submission."""
    from approvals.board import UtcDay

    rows = (_reviews(start, end).annotate(day=UtcDay("created_at"), seconds=Round(_wait()))
            .values("day", "seconds").annotate(verdicts=Count("pk")).order_by())
    return [{"day": _day(r["day"]), "seconds": int(r["seconds"]), "verdicts": r["verdicts"]} for r in rows]


def count_failed(start: datetime, end: datetime | None = None) -> dict[date, int]:
    from approvals.board import UtcDay

    rows = Execution.objects.filter(started_at__gte=start, outcome=Execution.Outcome.FAILED)
    if end is not None:
        rows = rows.filter(started_at__lt=end)
    return {_day(r["day"]): r["n"] for r in rows.annotate(day=UtcDay("started_at")).values("day")
            .annotate(n=Count("pk")).order_by()}


def roll_up(day: date, checked_at: datetime | None = None) -> None:
    """Count one finished day again from the record and replace its rollup, in one transaction."""
    if day >= utc_day(timezone.now()):
        raise ValueError(f"{day} is not finished: only finished days are rolled up")
    start, end = start_of(day), start_of(day + timedelta(days=1))
    checked_at = checked_at or timezone.now()
    BoardDay.objects.get_or_create(day=day, defaults={"checked_at": checked_at})
    with transaction.atomic():
        BoardDay.objects.select_for_update().get(day=day)  # two refreshes of one day take turns
        for model in ROLLED:
            model.objects.filter(day=day).delete()
        BoardDayProposals.objects.bulk_create([BoardDayProposals(**_columns(BoardDayProposals, row))
                                               for row in count_proposals(start, end)])
        BoardDayReviewer.objects.bulk_create([BoardDayReviewer(**_columns(BoardDayReviewer, row))
                                              for row in count_reviewers(start, end)])
        BoardDayWait.objects.bulk_create([BoardDayWait(**row) for row in count_waits(start, end)])
        BoardDay.objects.filter(day=day).update(checked_at=checked_at, failed_executions=count_failed(start, end).get(day, 0))


def finished_days(now: datetime | None = None, days: int = WINDOW_DAYS) -> list[date]:
    """The last `days` finished UTC days, oldest first."""
    today = utc_day(now or timezone.now())
    return [today - timedelta(days=n) for n in range(days, 0, -1)]


def changed_days(since: datetime) -> set[date]:
    """The days whose figures a change recorded since `since` touches: the changed proposals' own days,
    their verdicts' days and their executions' days."""
    from approvals.board import UtcDay

    changed = Proposal.history.filter(history_date__gte=since)
    ids = changed.values("id")
    days = set(changed.annotate(day=UtcDay("created_at")).values_list("day", flat=True).distinct().order_by())
    days |= set(Review.objects.filter(proposal_id__in=ids).annotate(day=UtcDay("created_at"))
                .values_list("day", flat=True).distinct().order_by())
    days |= set(Execution.objects.filter(proposal_id__in=ids).annotate(day=UtcDay("started_at"))
                .values_list("day", flat=True).distinct().order_by())
    return {_day(d) for d in days}


def refresh(now: datetime | None = None, everything: bool = False) -> list[date]:
    """Roll up the window's finished days that are missing or changed since their last check (or,
    `everything`, all of them: after rows were loaded in bulk without history, as by a restore or the
    benchmarks); forget older ones. Returns the days counted again."""
    started = timezone.now()
    window = finished_days(now)
    checked = BoardDay.objects.filter(day__in=window).aggregate(oldest=Min("checked_at"))["oldest"]
    have = set() if everything else set(BoardDay.objects.filter(day__in=window).values_list("day", flat=True))
    todo = {d for d in window if d not in have}
    if checked is not None:
        todo |= changed_days(checked - MARGIN) & set(window)
    for day in sorted(todo):
        roll_up(day, started)
    BoardDay.objects.filter(day__in=window).update(checked_at=started)
    for model in (*ROLLED, BoardDay):
        model.objects.filter(day__lt=window[0]).delete()
    return sorted(todo)


def ensure(first: date, tail: datetime) -> dict[date, int]:
    """Roll up any finished day from `first` up to the tail's day that is not yet; returns each such
    day's failed executions (the BoardDay rows: one query when nothing is missing)."""
    wanted = [first + timedelta(days=n) for n in range((tail.date() - first).days)]
    failed = dict(BoardDay.objects.filter(day__in=wanted).values_list("day", "failed_executions"))
    missing = [d for d in wanted if d not in failed]
    for day in missing:
        roll_up(day)
    if missing:
        failed = dict(BoardDay.objects.filter(day__in=wanted).values_list("day", "failed_executions"))
    return failed


def rows(since: datetime, now: datetime, since_proposals: datetime | None = None) -> DayRows:
    """Every figure's rows from `since` (the start of a day) on, the proposals' from `since_proposals`
    (earlier: approve-as-rule's agents) if given: finished days from the rollup (rolling up any
    missing one first), from the tail on counted live. Ten queries when nothing is missing."""
    first = utc_day(min(since, since_proposals or since))
    tail = tail_start(since, now)
    failed = ensure(first, tail)
    finished = {"day__gte": utc_day(since), "day__lt": tail.date()}
    proposals = (BoardDayProposals.objects.filter(day__gte=first, day__lt=tail.date())
                 .values(*_fields(BoardDayProposals), slug=F("connector__slug")))
    reviewers = BoardDayReviewer.objects.filter(**finished).values(*_fields(BoardDayReviewer), username=F("reviewer__username"))
    waits = BoardDayWait.objects.filter(**finished).values(*_fields(BoardDayWait))
    for day, n in count_failed(tail).items():
        failed[day] = failed.get(day, 0) + n
    return DayRows(proposals=list(proposals) + count_proposals(tail), reviewers=list(reviewers) + count_reviewers(tail),
                   waits=list(waits) + count_waits(tail), failed=failed)


def _fields(model) -> list[str]:
    return [f.attname for f in model._meta.concrete_fields if not f.primary_key]


def _columns(model, row: dict) -> dict:
    return {name: row[name] for name in _fields(model)}


def proposal_groups(since: datetime, now: datetime, outcomes: tuple) -> set[tuple[str, str, int | None]]:
    """(agent, action, connector id) of the agent proposals with one of `outcomes` that people decided,
    created since `since`'s day: from the rollup, and live from the tail on."""
    first = utc_day(since)
    tail = tail_start(start_of(first), now)
    ensure(first, tail)
    rolled = (BoardDayProposals.objects.filter(day__gte=first, day__lt=tail.date(), outcome__in=outcomes, decided__gt=0)
              .values_list("agent", "action", "connector_id").distinct().order_by())
    live = (Proposal.objects.filter(created_at__gte=tail, canary=False, outcome__in=outcomes, status__in=decided_by_people())
            .values_list("agent", "action", "connector_id").distinct().order_by())
    return set(rolled) | set(live)
