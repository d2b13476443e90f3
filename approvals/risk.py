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

Cost: the agent's recent behaviour (an aggregate over its last `WINDOW` proposals, read from the
index proposal_agent_recent alone, and when the proposal has an amount the TOP largest amounts
among them, for the 99th percentile), the open proposals on the record (a count, index connector,
target) and, for a decision, the agent's track record (`approvals.facts.JUDGED_ROWS`, from the
partial index proposal_agent_judged) are ONE statement: each is a derived table of one row,
cross-joined, written by hand (see BEHAVIOUR_ROWS). Never a scan of all the agent's rows, nor a
visit to their wide rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Case, IntegerField, Q, Value, When
from django.db.models.sql import Query
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from approvals.models import OPEN_STATUSES, Proposal
from hitlgov import raw_rows

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


def literals(values: tuple[str, ...]) -> str:
    """Our own constants (statuses, outcomes) as SQL string literals, for the hand-written statements."""
    return ", ".join("'" + value.replace("'", "''") + "'" for value in values)


def condition(where: Q, alias: str) -> str:
    """`where`, a condition on proposals, as SQL text for a hand-written statement reading them as `alias`,
    compiled by the ORM as a migration compiles a partial index's condition (values inlined as literals).

    SQLite uses a partial index only when the statement states the index's condition in the index's
    own form: compiling the statement's copy from the same Q keeps the two from drifting apart.
    """
    query = Query(Proposal)
    compiler = query.get_compiler(connection=connection)
    sql, params = query.build_where(where).relabeled_clone({Proposal._meta.db_table: alias}).as_sql(compiler, connection)
    if any(not isinstance(value, str) for value in params):
        raise TypeError(f"only string values can be inlined, not {params!r}")
    return sql % tuple(literals((value,)) for value in params)


def key(proposal: Proposal) -> Any:
    """The proposal's id as the database compares it (a UUID on PostgreSQL, 32 hex digits on SQLite)."""
    return Proposal._meta.pk.get_db_prep_value(proposal.pk, connection)


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


# The statement is written by hand: its shape never depends on the values, and the ORM compiling its
# derived tables and CASE columns was a quarter of a submission's CPU (bench/intake_cpu.py --profile).
# Placeholders are Django's %s on both vendors; values are adapted as the ORM adapts them (`key`,
# adapt_datetimefield_value), so SQLite compares the same text and PostgreSQL the same types.
# tests/test_risk_statement.py holds the ORM's form of each part and compares the results on varied rows.

# The agent's last WINDOW proposals (index agent, created_at), flagged for BEHAVIOUR_SUMS.
BEHAVIOUR_ROWS = f"""SELECT created_at, amount,
    CASE WHEN created_at >= %s THEN 1 ELSE 0 END AS last_hour,
    CASE WHEN action = %s THEN 1 ELSE 0 END AS same_action,
    CASE WHEN action = %s AND currency = %s AND amount IS NOT NULL THEN 1 ELSE 0 END AS same_amounts
    FROM approvals_proposal WHERE agent = %s AND id <> %s ORDER BY created_at DESC LIMIT {WINDOW}"""
BEHAVIOUR_SUMS = ("COUNT(*)", "MIN(created_at)", "SUM(last_hour)", "SUM(same_action)", "SUM(same_amounts)")
# The 99th percentile by nearest rank of m amounts is the k-th largest, k = m - ceil(0.99 * m) + 1
# (ceil(99m / 100) being (99m + 99) / 100 in integers): with at most WINDOW amounts, k is at most TOP.
# So only the TOP largest amounts of the same rows are ranked, one column each, and Python picks the
# k-th once the behaviour part has counted m. Ranking all of them took a sort of the whole window
# (5 ms of SQLite's CPU per submission at 1,000 rows); the TOP largest are a bounded sort.
def _from_top(amounts: int) -> int:
    return amounts - (99 * amounts + 99) // 100 + 1


TOP = max(_from_top(m) for m in range(MIN_AMOUNTS, WINDOW + 1))
TOP_ROWS = f"""SELECT amount, ROW_NUMBER() OVER (ORDER BY amount DESC) AS place FROM (
    SELECT amount FROM ({BEHAVIOUR_ROWS}) AS recent WHERE same_amounts = 1 ORDER BY amount DESC LIMIT {TOP}) AS top"""
TOP_SUMS = tuple(f"MAX(CASE WHEN place = {k} THEN amount END)" for k in range(1, TOP + 1))
# Other open proposals on the same record of the same connector (index connector, target).
OPEN_ROWS = f"""SELECT id FROM approvals_proposal WHERE connector_id = %s AND target_type = %s AND target_id = %s
    AND status IN ({literals(OPEN_STATUSES)}) AND id <> %s"""
OPEN_SUMS = ("COUNT(*)",)

Part = tuple[tuple[str, ...], str, list]  # the sums, the SQL of the rows they sum, its parameters


def behaviour_part(proposal: Proposal, hour_ago: datetime) -> Part:
    """The agent's recent work."""
    params = [connection.ops.adapt_datetimefield_value(hour_ago), proposal.action, proposal.action,
              proposal.currency, proposal.agent, key(proposal)]
    return BEHAVIOUR_SUMS, BEHAVIOUR_ROWS, params


def top_part(proposal: Proposal, hour_ago: datetime) -> Part:
    """The TOP largest amounts of the same rows in the proposal's action and currency, largest first."""
    return TOP_SUMS, TOP_ROWS, behaviour_part(proposal, hour_ago)[2]


def open_part(proposal: Proposal) -> Part:
    return OPEN_SUMS, OPEN_ROWS, [proposal.connector_id, proposal.target_type, proposal.target_id, key(proposal)]


def behaviour(proposal: Proposal, now: datetime | None = None) -> Behaviour:
    """Burst ratio, earlier proposals for the action and the amounts on record, in one aggregate query."""
    hour_ago = (now or timezone.now()) - HOUR
    (sums,) = one_row(behaviour_part(proposal, hour_ago))
    return _behaviour_from(sums, hour_ago)


def _behaviour_from(sums: tuple, hour_ago: datetime) -> Behaviour:
    n, oldest, last_hour, same_action, amounts = sums[:len(BEHAVIOUR_SUMS)]
    return Behaviour(_burst_ratio(n, last_hour or 0, _instant(oldest), hour_ago), same_action or 0, amounts or 0)


def _instant(value: datetime | str | None) -> datetime | None:
    """MIN over a derived table loses the column's type on SQLite: its text, stored in UTC, parsed back."""
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, dt_timezone.utc)
    return value


def _amount(value: Any) -> Decimal | None:
    """An amount as the ORM reads it: SQLite returns an aggregate's number as a float or int, the
    field's converters make it the Decimal with two places PostgreSQL returns."""
    return None if value is None else raw_rows.as_read(value, Proposal, "amount")


def statement(*parts: Part) -> tuple[str, list]:
    """The SQL and parameters of `one_row`'s statement."""
    tables, params = [], []
    for n, (sums, rows, rows_params) in enumerate(parts):
        tables.append(f"(SELECT {', '.join(sums)} FROM ({rows}) AS rows{n}) AS part{n}")
        params.extend(rows_params)
    return f"SELECT * FROM {' CROSS JOIN '.join(tables)}", params


def one_row(*parts: Part) -> list[tuple]:
    """Several aggregates, each `sums` over its rows, in one statement: one derived table of one row
    per part, cross-joined. Returns each part's sums in order."""
    with connection.cursor() as cursor:
        cursor.execute(*statement(*parts))
        row = cursor.fetchone()
    split, at = [], 0
    for sums, _, _ in parts:
        split.append(tuple(row[at:at + len(sums)]))
        at += len(sums)
    return split


def _p99(top: tuple, amounts: int) -> Decimal | None:
    """The 99th percentile (nearest rank) of `amounts` amounts, from the largest of them (`top`, largest first)."""
    if amounts < MIN_AMOUNTS:
        return None
    return _amount(top[_from_top(amounts) - 1])


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


def risk_facts(proposal: Proposal, now: datetime | None = None) -> dict[str, Any]:
    """The risk-trigger facts as keyword arguments for `policies.engine.Facts` (overrides come with the track record)."""
    return surroundings(proposal, now=now)[1]


def surroundings(proposal: Proposal, *also: Part, now: datetime | None = None) -> tuple[list[tuple], dict[str, Any]]:
    """The risk facts, with the sums of `also` (a caller's other aggregates, e.g. the track record)
    read in the same statement. Returns (also's sums, the risk facts).

    amount_p99 is the 99th percentile (nearest rank) of the agent's amounts for this action and
    currency among its last WINDOW proposals; None with fewer than MIN_AMOUNTS of them or no amount
    on this proposal.
    """
    hour_ago = (now or timezone.now()) - HOUR
    parts = [behaviour_part(proposal, hour_ago), *also]
    if proposal.target_id:
        parts.append(open_part(proposal))
    if proposal.amount is not None:
        parts.append(top_part(proposal, hour_ago))
    sums = one_row(*parts)
    seen = _behaviour_from(sums[0], hour_ago)
    p99 = _p99(sums[-1], seen.amounts) if proposal.amount is not None else None
    open_count = sums[len(also) + 1][0] if proposal.target_id else 0
    return sums[1:len(also) + 1], {
        "open_on_record": open_count, "record_changed": record_changed(proposal),
        "burst_ratio": seen.burst_ratio, "amount_p99": p99,
        "prior_actions": seen.prior_actions, "sample_point": sample_point(proposal),
    }
