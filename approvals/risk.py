"""Risk-trigger facts: what the policy learns about a proposal from its surroundings, computed cheaply.

Each becomes an engine fact (`policies.engine.Facts`) stored with the decision, so a simulation
replays it; the matrix routes on it with a condition of the same name (docs/approval-models.md):

- conflicting records: other open proposals on the same record (`open_on_record`), and the fields
  whose live value differs from what the agent says it saw (`record_changed`, from `observed`);
- repeated overrides: `overrides`, from the track record breakers share (`approvals.facts.track_record`);
- unusual behaviour: `burst_ratio` (proposals in the last hour over the usual hourly rate) and
  `amount_p99` (the 99th percentile of its amounts for the action);
- a new agent: `prior_actions`, its earlier proposals for the action;
- `sample_point`: the proposal's fixed place in on-the-loop sampling.

Cost: the agent's recent behaviour (an aggregate over its last `WINDOW` proposals, index agent,
created_at), the open proposals on the record (a count, index connector, target) and, for a
decision, the agent's track record (`approvals.facts.judged_rows`) are ONE statement: each is a
derived table of one row, cross-joined. The percentile costs one more query, only when the proposal
has an amount and the agent has enough history. Never a scan of all the agent's rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Case, IntegerField, Q, QuerySet, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from approvals.models import OPEN_STATUSES, Proposal

WINDOW = 1000  # the agent's most recent proposals its usual behaviour is judged on
HOUR = timedelta(hours=1)
MIN_BASELINE = 20  # proposals older than the last hour before a usual rate means anything
MIN_BASELINE_HOURS = 1.0  # ... spread over at least this long
MIN_AMOUNTS = 100  # amounts for the action before a 99th percentile means anything


@dataclass(frozen=True)
class Behaviour:
    """The agent's recent work, from one aggregate over its last WINDOW proposals."""

    burst_ratio: float | None
    prior_actions: int
    amounts: int  # how many of them carry an amount in this action and currency


def sample_point(proposal: Proposal) -> float:
    """A number in [0, 1) fixed by the proposal's id: whether on-the-loop work is sampled never changes on replay."""
    digest = hashlib.sha256(f"on-the-loop:{proposal.pk}".encode()).digest()
    return int.from_bytes(digest[:6], "big") / 2**48


def flag(condition: Q) -> Case:
    """1 where a row meets `condition`, else 0: a column an outer SUM counts."""
    return Case(When(condition, then=Value(1)), default=Value(0), output_field=IntegerField())


def open_rows(proposal: Proposal) -> QuerySet:
    """Other open proposals on the same record of the same connector."""
    return (Proposal.objects.filter(connector_id=proposal.connector_id, target_type=proposal.target_type,
                                    target_id=proposal.target_id, status__in=OPEN_STATUSES)
            .exclude(pk=proposal.pk).values("pk"))


def open_on_record(proposal: Proposal) -> int:
    """Other open proposals on the same record of the same connector (none without a target)."""
    return open_rows(proposal).count() if proposal.target_id else 0


def record_changed(proposal: Proposal) -> frozenset[str]:
    """Fields the agent says it saw (`observed`) whose live value, as previewed, is now different.

    Only previewed fields (the ones the change touches) have a live value to compare with;
    other observed fields are not read, so they cannot conflict.
    """
    observed = proposal.observed if isinstance(proposal.observed, dict) else {}
    live = proposal.preview_before or {}
    return frozenset(name for name, seen in observed.items() if name in live and not _same(seen, live[name]))


def _same(seen: Any, live: Any) -> bool:
    """Equal as the API would show them: a Decimal 120.00 and the string "120.00" are the same value."""
    return seen == live or json.dumps(seen, default=str, sort_keys=True) == json.dumps(live, default=str, sort_keys=True)


def behaviour_rows(proposal: Proposal, hour_ago: datetime) -> QuerySet:
    """The agent's last WINDOW proposals, flagged for BEHAVIOUR_SUMS."""
    same_amounts = Q(action=proposal.action, currency=proposal.currency, amount__isnull=False)
    return (Proposal.objects.filter(agent=proposal.agent).exclude(pk=proposal.pk).order_by("-created_at")
            .annotate(last_hour=flag(Q(created_at__gte=hour_ago)), same_action=flag(Q(action=proposal.action)),
                      same_amounts=flag(same_amounts))
            .values("created_at", "last_hour", "same_action", "same_amounts")[:WINDOW])


BEHAVIOUR_SUMS = ("COUNT(*)", "MIN(created_at)", "SUM(last_hour)", "SUM(same_action)", "SUM(same_amounts)")
OPEN_SUMS = ("COUNT(*)",)


def behaviour(proposal: Proposal, now: datetime | None = None) -> Behaviour:
    """Burst ratio, earlier proposals for the action and the amounts on record, in one aggregate query."""
    hour_ago = (now or timezone.now()) - HOUR
    (sums,) = one_row((BEHAVIOUR_SUMS, behaviour_rows(proposal, hour_ago)))
    return _behaviour_from(sums, hour_ago)


def _behaviour_from(sums: tuple, hour_ago: datetime) -> Behaviour:
    n, oldest, last_hour, same_action, amounts = sums
    return Behaviour(_burst_ratio(n, last_hour or 0, _instant(oldest), hour_ago), same_action or 0, amounts or 0)


def _instant(value: datetime | str | None) -> datetime | None:
    """MIN over a derived table loses the column's type on SQLite: its text, stored in UTC, parsed back."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, dt_timezone.utc)
    return value


def one_row(*parts: tuple[tuple[str, ...], QuerySet]) -> list[tuple]:
    """Several aggregates, each `sums` over its rows, in one statement: one derived table of one row
    per part, cross-joined. Returns each part's sums in order."""
    tables, params = [], []
    for n, (sums, rows) in enumerate(parts):
        inner, inner_params = rows.query.sql_with_params()
        tables.append(f"(SELECT {', '.join(sums)} FROM ({inner}) AS rows{n}) AS part{n}")
        params.extend(inner_params)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {' CROSS JOIN '.join(tables)}", params)
        row = cursor.fetchone()
    split, at = [], 0
    for sums, _ in parts:
        split.append(tuple(row[at:at + len(sums)]))
        at += len(sums)
    return split


def _burst_ratio(n: int, last_hour: int, oldest: datetime | None, hour_ago: datetime) -> float | None:
    """This proposal and the last hour's, over the usual hourly rate before that hour; None without a baseline.

    A window the last hour fills has no baseline: budgets (a count per window) are the cap for that.
    """
    before = n - last_hour
    if oldest is None or before < MIN_BASELINE:
        return None
    hours = (hour_ago - oldest).total_seconds() / 3600
    if hours < MIN_BASELINE_HOURS:
        return None
    return round((last_hour + 1) / (before / hours), 2)


def amount_p99(proposal: Proposal, amounts: int) -> Decimal | None:
    """The 99th percentile (nearest rank) of the agent's amounts for this action and currency among its
    last WINDOW proposals; None with fewer than MIN_AMOUNTS of them or no amount on this proposal."""
    if proposal.amount is None or amounts < MIN_AMOUNTS:
        return None
    recent = Proposal.objects.filter(agent=proposal.agent).exclude(pk=proposal.pk).order_by("-created_at").values("pk")[:WINDOW]
    from_top = amounts - math.ceil(0.99 * amounts)  # rank 0 is the largest
    ranked = (Proposal.objects.filter(pk__in=recent, action=proposal.action, currency=proposal.currency,
                                      amount__isnull=False).order_by("-amount").values_list("amount", flat=True))
    return next(iter(ranked[from_top:from_top + 1]), None)


def risk_facts(proposal: Proposal, now: datetime | None = None) -> dict[str, Any]:
    """The risk-trigger facts as keyword arguments for `policies.engine.Facts` (overrides come with the track record)."""
    return surroundings(proposal, now=now)[1]


def surroundings(
    proposal: Proposal, *also: tuple[tuple[str, ...], QuerySet], now: datetime | None = None,
) -> tuple[list[tuple], dict[str, Any]]:
    """The risk facts, with the sums of `also` (a caller's other aggregates, e.g. the track record)
    read in the same statement. Returns (also's sums, the risk facts)."""
    hour_ago = (now or timezone.now()) - HOUR
    parts = [(BEHAVIOUR_SUMS, behaviour_rows(proposal, hour_ago)), *also]
    if proposal.target_id:
        parts.append((OPEN_SUMS, open_rows(proposal)))
    sums = one_row(*parts)
    seen = _behaviour_from(sums[0], hour_ago)
    open_count = sums[len(also) + 1][0] if proposal.target_id else 0
    return sums[1:len(also) + 1], {
        "open_on_record": open_count, "record_changed": record_changed(proposal),
        "burst_ratio": seen.burst_ratio, "amount_p99": amount_p99(proposal, seen.amounts),
        "prior_actions": seen.prior_actions, "sample_point": sample_point(proposal),
    }
