"""Collect what each transaction writes and turn it into one decision-log event as it commits.

Nothing has to call this: django-simple-history's post_create_historical_record (every history
row: proposals, tiers, matrices, switches, connectors, keys...; `bulk_history_create` too, see
`_wrap_bulk_history`) and post_save/post_delete of the other models of the governed apps add an
entry to the connection's pending list. The audited database backends (`ledger.backends`) write
the pending entries as one event just before the transaction commits, drop the entries of a
savepoint that rolls back, and forget them all on a rollback. A write outside any transaction
is logged at once, in a transaction of its own.

Who and why come from the history rows (`_history_user`, `_change_reason`); a row with `agent`
and `action` (a proposal's) names the agent and action the event is about; the exception
category is set by the operation or the system (`categorize`).
"""

from __future__ import annotations

from typing import Any

from django.db import connections, transaction
from django.db.models.signals import post_delete, post_save
from simple_history.manager import HistoryManager
from simple_history.signals import post_create_historical_record

from ledger import chain

GOVERNED_APPS = {"approvals", "policies", "connectors", "ledger"}
IGNORED_MODELS = {"approvals.ratewindow", "ledger.event"}  # per-request counters; the log itself

def connect() -> None:
    post_create_historical_record.connect(_history_row, dispatch_uid="ledger-history")
    post_save.connect(_saved, dispatch_uid="ledger-saved")
    post_delete.connect(_deleted, dispatch_uid="ledger-deleted")
    _wrap_bulk_history()


def categorize(category: str, *, by: str = "system", using: str = "default") -> None:
    """The operation in progress on `using` ends in this exception category.

    `by` is "system" (set from what happened) or "reviewer" (chosen by a person): a reviewer's
    choice wins over the system's, otherwise the last one set wins.
    """
    _add(connections[using], {"category": category, "category_by": by})


def add_records(records: list[dict[str, Any]], reason: str, *, user: str = "", using: str = "default") -> None:
    """Rows an operation wrote without signals (a bulk .update()), for its event: what and why."""
    _add(connections[using], {"records": records, "reason": reason, "user": user})


# ---- what is captured ----------------------------------------------------------------------

def _history_row(sender, instance, history_instance, using=None, **kwargs) -> None:
    _add(connections[using or history_instance._state.db or "default"], _history_note(history_instance))


def _history_note(row) -> dict[str, Any]:
    user = row.history_user if row.history_user_id else None
    note = {"record": chain.history_entry(row), "reason": row.history_change_reason or "",
            "user": user.get_username() if user is not None else ""}
    if hasattr(row, "agent") and hasattr(row, "action"):
        note["agent"], note["action"], note["subject"] = row.agent, row.action, str(row.id)
    return note


def _governed(model) -> bool:
    meta = model._meta
    return (model.__module__ != "__fake__"  # a migration's frozen model
            and meta.app_label in GOVERNED_APPS and meta.label_lower not in IGNORED_MODELS
            and not hasattr(model, "instance_type")  # a history model: its row is captured above
            and not getattr(meta, "simple_history_manager_attribute", None))  # tracked: its history row says it


def _saved(sender, instance, created, raw=False, using=None, **kwargs) -> None:
    if not raw and _governed(sender):
        _add(connections[using], {"record": _plain_entry(instance, "created" if created else "changed")})


def _deleted(sender, instance, using=None, **kwargs) -> None:
    if _governed(sender):
        _add(connections[using], {"record": _plain_entry(instance, "deleted")})


def _plain_entry(instance, op: str) -> dict[str, Any]:
    return {"model": instance._meta.label_lower, "id": str(instance.pk), "op": op}


def _wrap_bulk_history() -> None:
    """bulk_history_create sends no signal: log the rows it creates as if it had."""
    original = HistoryManager.bulk_history_create
    if getattr(original, "ledger_wrapped", False):
        return

    def bulk_history_create(self, objs, *args, **kwargs):
        rows = original(self, objs, *args, **kwargs)
        for row in rows or ():
            _add(connections[row._state.db or "default"], _history_note(row))
        return rows

    bulk_history_create.ledger_wrapped = True
    HistoryManager.bulk_history_create = bulk_history_create


# ---- pending entries and flushing --------------------------------------------------------------

def _add(connection, note: dict[str, Any]) -> None:
    pending = getattr(connection, "ledger_pending", None)
    if pending is None:  # not an audited backend: log each write on its own, still in its transaction
        write(connection, [(0, note)])
        return
    pending.append((len(connection.savepoint_ids), note))
    if at_top(connection):
        flush(connection)


def at_top(connection) -> bool:
    """Outside every operation's transaction (in a test: directly inside the test case's own)."""
    return all(getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)


def flush(connection) -> None:
    notes, connection.ledger_pending[:] = list(connection.ledger_pending), []
    if notes:
        write(connection, notes)


def write(connection, notes: list[tuple[int, dict[str, Any]]]) -> None:
    fields = _summary([note for _, note in notes])
    if not connection.get_autocommit():  # inside the transaction that wrote the rows
        chain.append(connection, **fields)
        return
    with transaction.atomic(using=connection.alias):
        chain.append(connection, **fields)


def _summary(notes: list[dict[str, Any]]) -> dict[str, Any]:
    reasons = list(dict.fromkeys(note["reason"] for note in notes if note.get("reason")))
    users = [note["user"] for note in notes if note.get("user")]
    first = lambda key: next((note[key] for note in notes if note.get(key)), "")  # noqa: E731
    chosen = [note for note in notes if note.get("category")]
    categories = [n["category"] for n in chosen if n["category_by"] == "reviewer"] or [n["category"] for n in chosen]
    return {
        "records": [record for note in notes for record in ([note["record"]] if "record" in note else note.get("records", []))],
        "reason": "; ".join(reasons), "user": users[-1] if users else "",
        "category": categories[-1] if categories else "",
        "subject": first("subject"), "agent": first("agent"), "action": first("action"),
    }


def savepoint_committed(connection) -> None:
    depth = len(connection.savepoint_ids)
    connection.ledger_pending[:] = [(min(d, depth), note) for d, note in connection.ledger_pending]
    if at_top(connection):
        flush(connection)


def savepoint_rolled_back(connection) -> None:
    depth = len(connection.savepoint_ids)
    connection.ledger_pending[:] = [(d, note) for d, note in connection.ledger_pending if d <= depth]
