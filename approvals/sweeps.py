"""The beat's set-based sweeps: escalate reviews past their SLA, expire work past its maximum age.

Every due row is handled in the same run, so batches take due rows in index order, not sorted.
Each batch is one transaction of a few statements however many rows are due: a conditional
UPDATE ... RETURNING claims up to BATCH rows, then the history rows of exactly those rows are
copied in one INSERT ... SELECT (simple-history records nothing for set-based writes, so the
sweep writes its audit rows itself), and the agents' `proposal.expired` events are stored in
one bulk insert. The UPDATE re-checks its condition on every row it writes, so two sweeps
running at once never both claim a row: the second finds it escalated or expired already and
writes neither a history row nor an event for it. Intake keeps answering between batches.

RETURNING is plain SQL on PostgreSQL and SQLite (3.35+); the column lists come from the models.
A batch's ids travel as one array parameter on PostgreSQL (`approvals.id_lists`).

When more than one batch is due (a first full batch says so), PostgreSQL works through the rest on
`SWEEP_CONNECTIONS` connections side by side, one thread each: a batch is half the database's work
(UPDATE, INSERT ... SELECT) and half this process's (digesting the history rows for the decision
log), so while one connection waits for the database another digests. Batches claim their rows
`FOR UPDATE SKIP LOCKED`, so they never take the same row nor wait for each other (nor for a
reviewer's transaction holding a row: that row is left to the next sweep), and a batch that comes
back short means every due row is claimed. SQLite has one writer: it sweeps on one connection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from approvals import events, notifications
from approvals.id_lists import in_list
from ledger import capture, chain
from approvals.models import EXPIRABLE_STATUSES, Proposal, ReviewTask, Status

BATCH = 2000  # rows per statement: short transactions, so intake and reviewers never wait long
HISTORY_FIELDS = {"history_id", "history_date", "history_change_reason", "history_type", "history_user"}
TIRED_OF_WAITING = "expired: still waiting at the maximum age the approval matrix allows"
NO_ANSWER = "expired: the agent did not answer the reviewer's question in time"


def escalate_overdue(now: datetime | None = None) -> int:
    """Active review tiers past their SLA: the escalation group may now decide too. Returns how many."""
    now = now or timezone.now()
    if not _first(_overdue_tiers(now), "due_at"):
        return 0  # the usual beat: one indexed read, no write transaction
    return _in_batches(lambda: _escalation_batch(now))


def expire_overdue(now: datetime | None = None) -> int:
    """Waiting proposals past `expires_at` expire (never to execute); their agents are told. Returns how many."""
    now = now or timezone.now()
    if not _first(_expiring(now), "expires_at"):
        return 0
    return _in_batches(lambda: _expiry_batch(now))


def _escalation_batch(now: datetime) -> int:
    with transaction.atomic(durable=True):
        rows = _escalate_batch(now)
        ids = [task_id for task_id, _, _ in rows]
        _copy_history(ReviewTask, ids, now, _ESCALATION_REASON)
        _mark_escalated(rows)
        notifications.announce_in_bulk(notifications.ESCALATED, task_ids=ids, now=now)
    return len(ids)


def _expiry_batch(now: datetime) -> int:
    with transaction.atomic(durable=True):
        ids = _expire_batch(now)
        tiers = _close_tiers(ids)
        _copy_history(Proposal, ids, now, "t.status_reason")
        _copy_history(ReviewTask, tiers, now, "'closed: the proposal expired'")
        events.record_in_bulk(ids, "proposal.expired", now)
        notifications.announce_in_bulk("expired", proposal_ids=ids, now=now)
    return len(ids)


# ---- batches, side by side where the database allows -----------------------------------------

def _in_batches(batch: Callable[[], int]) -> int:
    """Run `batch` (one transaction; returns how many rows it handled) until one comes back short.
    The first runs here: usually it is the only one, and it runs in the caller's transaction
    context (a test's). Once it came back full, the rest run on more connections if there are any."""
    handled = batch()
    if handled < BATCH:
        return handled
    helpers = _connections() - 1
    if helpers < 1:
        return handled + _until_short(batch)
    with ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="sweep") as pool:
        others = [pool.submit(_on_own_connection, batch) for _ in range(helpers)]
        mine = _until_short(batch)
        return handled + mine + sum(other.result() for other in others)  # a helper's error is raised here


def _connections() -> int:
    """How many connections a sweep may use at once: SWEEP_CONNECTIONS where batches can skip each
    other's rows (PostgreSQL), else one."""
    if not connection.features.has_select_for_update_skip_locked:
        return 1
    return max(1, settings.SWEEP_CONNECTIONS)


def _until_short(batch: Callable[[], int]) -> int:
    handled = 0
    while True:
        rows = batch()
        handled += rows
        if rows < BATCH:
            return handled


def _on_own_connection(batch: Callable[[], int]) -> int:
    """_until_short in a helper thread, which Django gives its own connection: closed when done, as a
    request's would be (the thread ends with it)."""
    try:
        return _until_short(batch)
    finally:
        connection.close()


# ---- the statements ------------------------------------------------------------------------------

def _overdue_tiers(now: datetime):
    return ReviewTask.objects.filter(state=ReviewTask.State.ACTIVE, due_at__lt=now, escalated_at__isnull=True)


def _expiring(now: datetime):
    return Proposal.objects.filter(status__in=EXPIRABLE_STATUSES, expires_at__lte=now, claimed_by__isnull=True)


def _first(due: QuerySet, deadline: str) -> bool:
    """Whether anything is due, asked as "the first one by deadline", so that every planner walks the
    deadline's index from its start and stops at once. Asked with EXISTS, SQLite, whose statistics
    have no histogram, scanned the whole table when the open rows' deadlines all looked alike
    (31-56 ms at 100,000 open; this way about 1 ms for both sweeps)."""
    return due.order_by(deadline).values_list("pk", flat=True).first() is not None


def _table(model: type[Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _claimed(table: str, condition: str) -> str:
    """The rows a batch claims (at most BATCH matching `condition`; its one parameter after
    `condition`'s is the limit), selected once, ahead of the UPDATE that writes them. Where the
    database can, past rows another batch (or a reviewer) holds: as an `id IN (SELECT ... LIMIT n
    FOR UPDATE SKIP LOCKED)` subquery, PostgreSQL's nested-loop semi-join ran the subquery again for
    every row it joined, each run skipping the rows the last had locked, so a batch of 3 claimed 14."""
    skip_locked = " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    return f"WITH claimed AS MATERIALIZED (SELECT id FROM {table} WHERE {condition} LIMIT %s{skip_locked}) "


def _escalate_batch(now: datetime) -> list[tuple]:
    """(tier id, proposal id, escalation group id) of each tier this batch escalated."""
    table, active = _table(ReviewTask), ReviewTask.State.ACTIVE.value
    sql = (
        _claimed(table, "state = %s AND escalated_at IS NULL AND due_at < %s")
        + f"UPDATE {table} SET escalated_at = %s WHERE id IN (SELECT id FROM claimed)"
        f" AND state = %s AND escalated_at IS NULL RETURNING id, proposal_id, escalation_group_id"
    )
    return _rows(sql, [active, now, BATCH, now, active])


# The escalation group's name, read in the INSERT ... SELECT (G is the group table, joined there).
_ESCALATION_REASON = "'SLA missed: escalated to ' || COALESCE(g.name, 'nobody (no escalation group)')"


def _mark_escalated(rows: Sequence[tuple]) -> None:
    """The inbox's copy of each escalated tier on its proposal (lifecycle.mark_active_tier): one UPDATE
    per escalation group (a matrix names a handful), not a correlated subquery per proposal."""
    by_group: dict = {}
    for _, proposal_id, group_id in rows:
        by_group.setdefault(group_id, []).append(proposal_id)
    for group_id, proposal_ids in by_group.items():
        Proposal.objects.filter(pk__any_of=proposal_ids).update(escalated_to_id=group_id)


def _expire_batch(now: datetime) -> list:
    table = _table(Proposal)
    waiting = ", ".join(["%s"] * len(EXPIRABLE_STATUSES))
    condition = f"status IN ({waiting}) AND expires_at <= %s AND claimed_by_id IS NULL"
    params = [*(status.value for status in EXPIRABLE_STATUSES), now]
    sql = (
        _claimed(table, condition)
        + f"UPDATE {table} SET status = %s, due_at = NULL, expires_at = NULL, active_group_id = NULL, escalated_to_id = NULL,"
        f" updated_at = %s,"
        f" status_reason = CASE WHEN status = %s THEN %s ELSE %s END"
        f" WHERE id IN (SELECT id FROM claimed) AND {condition}"
        f" RETURNING id"
    )
    return _returning(sql, [*params, BATCH, Status.EXPIRED.value, now, Status.INFO_REQUESTED.value, NO_ANSWER,
                            TIRED_OF_WAITING, *params])


def _close_tiers(proposal_ids: Sequence) -> list:
    if not proposal_ids:
        return []
    of_proposals, ids = in_list("proposal_id", _db_ids(Proposal, proposal_ids), connection)
    open_states = [ReviewTask.State.WAITING.value, ReviewTask.State.ACTIVE.value]
    sql = f"UPDATE {_table(ReviewTask)} SET state = %s WHERE {of_proposals} AND state IN (%s, %s) RETURNING id"
    return _returning(sql, [ReviewTask.State.CLOSED.value, *ids, *open_states])


def _returning(sql: str, params: list) -> list:
    """The first column of what the statement returned (its ids)."""
    return [row[0] for row in _rows(sql, params)]


def _rows(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, _as_stored(params))
        return cursor.fetchall()


def _as_stored(params: list) -> list:
    """Datetimes as the ORM stores them: raw SQL would hand SQLite an ISO string with "+00:00", which
    neither sorts nor compares equal to the ORM's own text for the same instant."""
    return [connection.ops.adapt_datetimefield_value(p) if isinstance(p, datetime) else p for p in params]


def _db_ids(model: type[Model], ids: Sequence) -> list:
    """Ids as the database compares them (SQLite keeps a UUID as 32 hex characters)."""
    pk = model._meta.pk
    return [pk.get_db_prep_value(pk.to_python(value), connection) for value in ids]


def _copy_history(model: type[Model], ids: Sequence, now: datetime, reason_sql: str) -> None:
    """One history row per row in `ids`, copied from its current state in one statement that also
    returns what it wrote, for the decision log (a second query reading them back cost a round trip
    and an index probe per row).

    `reason_sql` is the SQL of the history reason (a column, a quoted literal, or the escalation
    group's name read through the join `g`).
    """
    if not ids:
        return
    history = model.history.model
    columns = [f.column for f in history._meta.concrete_fields if f.name not in HISTORY_FIELDS]
    qn = connection.ops.quote_name
    copied, id_params = in_list("t.id", _db_ids(model, ids), connection)
    join = ""
    if "g.name" in reason_sql:
        join = f" LEFT JOIN {qn('auth_group')} g ON g.id = t.escalation_group_id"
    sql = (
        f"INSERT INTO {_table(history)} ({', '.join(qn(c) for c in columns)},"
        f" history_date, history_change_reason, history_type, history_user_id)"
        f" SELECT {', '.join('t.' + qn(c) for c in columns)}, %s, {reason_sql}, '~', NULL"
        f" FROM {_table(model)} t{join} WHERE {copied}"
        f" RETURNING {', '.join(qn(f.column) for f in history._meta.concrete_fields)}"
    )
    _log_history(history, _copied_rows(sql, [now, *id_params]))


def _copied_rows(sql: str, params: list) -> list[tuple]:
    """_rows, with PostgreSQL's timestamps read by psycopg's own loader (in C): Django puts on every
    cursor a Python subclass of it that only swaps in the connection's tzinfo, 15 us a proposal row
    (five timestamps). These rows are only digested, which reads each timestamp as its UTC instant."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            from psycopg import adapters, pq

            timestamptz = adapters.types["timestamptz"].oid
            cursor.cursor.adapters.register_loader(timestamptz, adapters.get_loader(timestamptz, pq.Format.TEXT))
        cursor.execute(sql, _as_stored(params))
        return cursor.fetchall()


def _log_history(history: type[Model], rows: list[tuple]) -> None:
    """The decision log records these rows as it records simple-history's (which send the signal it
    listens to; a set-based INSERT sends none): otherwise verify_audit would report them as inserted.
    `rows` are as the database returned them (every concrete field, in order)."""
    entries = chain.history_entries_returned(history, rows, connection)
    reason = history._meta.get_field("history_change_reason").column
    at = [field.column for field in history._meta.concrete_fields].index(reason)
    capture.add_records(entries, "; ".join(sorted({row[at] for row in rows})))
