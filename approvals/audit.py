"""The audit trail for auditors: every history row of the governed objects, field by field.

One row per django-simple-history record, oldest first::

    {"object": "proposal", "id": "0b7c...", "history_id": 12, "at": "2026-11-21T12:00:00.123456Z",
     "user": "finance1" | null, "reason": "approve by finance1 via admin" | null, "type": "+" | "~" | "-",
     "rule": "refunds-finance" | null,
     "changes": [{"field": "status", "old": "pending_review", "new": "approved"}, ...]}

`rule` is the matrix rule that decided the proposal the row is about (its first matching rule,
or "default"), null for rows about no proposal. Objects without history of their own (reviews,
executions, callback and notification deliveries, break-glass events, rollback batches) have one row each, as
they stand now, at the time they were created: `history_id` null, `type` "+", every field in
`changes` (old null); `user` is the person who acted (reviewer, confirming operator, requester)
and `reason` their reason (an execution's or delivery's error).

`changes` compares the row with the object's previous history row over every tracked
field, including the many that are editable=False (status, decision, approved_hash, ...):
simple-history's diff_against() would silently skip those. A created row (`+`) lists the
initial values (old null), a deleted row (`-`) the last ones (new null). Foreign keys are
given as the related object's primary key, JSON fields as JSON, decimals and times as
strings. The `object` filter picks a family; each row's `object` names its kind:

    proposal    -> proposal, review_task, review, execution, callback_delivery, notification, break_glass,
                   oversight_task
    people      -> delegation, notification_channel
    matrix      -> matrix, rule, review_tier, budget, circuit_breaker
    connector   -> connector, sandbox_record, rollback_batch
    killswitch  -> killswitch
    integration -> integration, api_key

Rows are read with .iterator() in chunks and merged lazily across the kinds, so an export
of any size runs in flat memory.
"""

from __future__ import annotations

import base64
import binascii
import csv
import heapq
import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone as dt_timezone
from decimal import Decimal
from typing import IO, Any
from uuid import UUID

from django.db.models import Model, OuterRef, Q, QuerySet, Subquery

from approvals import masking
from approvals.models import (
    ApiKey, BreakGlass, CallbackDelivery, Delegation, Integration, Notification, NotificationChannel, OversightTask, Proposal,
    Review, ReviewTask,
)
from approvals.printable import json_text, printable
from connectors.models import Connector, Execution, RollbackBatch, SandboxRecord
from policies.models import ApprovalMatrix, Budget, CircuitBreaker, KillSwitch, ReviewTier, Rule

FAMILIES: dict[str, tuple[tuple[str, type[Model]], ...]] = {
    "proposal": (("proposal", Proposal), ("review_task", ReviewTask), ("review", Review), ("execution", Execution),
                 ("callback_delivery", CallbackDelivery), ("notification", Notification), ("break_glass", BreakGlass),
                 ("oversight_task", OversightTask)),
    "people": (("delegation", Delegation), ("notification_channel", NotificationChannel)),
    "matrix": (("matrix", ApprovalMatrix), ("rule", Rule), ("review_tier", ReviewTier), ("budget", Budget),
               ("circuit_breaker", CircuitBreaker)),
    "connector": (("connector", Connector), ("sandbox_record", SandboxRecord), ("rollback_batch", RollbackBatch)),
    "killswitch": (("killswitch", KillSwitch),),
    "integration": (("integration", Integration), ("api_key", ApiKey)),
}


@dataclass(frozen=True)
class Snapshot:
    """Where a model without history keeps when, who and why, and the proposal it is about."""

    at: str
    user: str | None = None
    reason: str | None = None
    proposal: str | None = "proposal"


SNAPSHOTS: dict[type[Model], Snapshot] = {
    Review: Snapshot("created_at", "reviewer", "reason"),
    Execution: Snapshot("started_at", None, "error"),
    CallbackDelivery: Snapshot("created_at", None, "last_error"),
    Notification: Snapshot("created_at", None, "last_error"),
    BreakGlass: Snapshot("created_at", "confirmed_by", "reason"),
    RollbackBatch: Snapshot("created_at", "requested_by", "reason", proposal=None),
}
# Rows at the same instant are ordered by kind in this order, then by history_id.
KINDS: tuple[tuple[str, type[Model]], ...] = tuple(kind for family in FAMILIES.values() for kind in family)
CHUNK = 500
CSV_COLUMNS = ["object", "id", "history_id", "at", "user", "reason", "type", "rule", "field", "old", "new"]

SortKey = tuple[datetime, int, int]  # (history_date, kind index, history_id): the order rows come in


class InvalidQuery(Exception):
    """Bad filters: `errors` maps each parameter to its messages, as the API's 400 body does."""

    def __init__(self, errors: dict[str, list[str]]):
        super().__init__("; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class AuditQuery:
    families: tuple[str, ...]
    since: datetime | None = None
    until: datetime | None = None
    mask_sensitive: bool = False  # for readers without approvals.see_sensitive (approvals.masking)


# ---- parameters --------------------------------------------------------------------------------------

def parse_query(since: str | None, until: str | None, objects: str | None, *, mask_sensitive: bool = False) -> AuditQuery:
    """Validate the filters an auditor typed (ISO 8601 times, UTC if no offset; comma-separated families)."""
    errors: dict[str, list[str]] = {}
    parsed: dict[str, datetime | None] = {}
    for name, value in (("since", since), ("until", until)):
        try:
            parsed[name] = parse_instant(value) if value else None
        except OverflowError:
            errors[name] = ["out of range: give a time between the years 1 and 9999 in UTC"]
        except ValueError:
            errors[name] = ["an ISO 8601 time such as 2026-11-21T00:00:00Z"]
    families = tuple(dict.fromkeys(part.strip() for part in (objects or "").split(",") if part.strip()))
    unknown = [name for name in families if name not in FAMILIES]
    if unknown:
        errors["object"] = [f"unknown {', '.join(unknown)}; one or more of {', '.join(FAMILIES)}"]
    if not errors and parsed["since"] and parsed["until"] and parsed["since"] >= parsed["until"]:
        errors["until"] = ["must be after since"]
    if errors:
        raise InvalidQuery(errors)
    return AuditQuery(families=families or tuple(FAMILIES), since=parsed["since"], until=parsed["until"],
                      mask_sensitive=mask_sensitive)


def parse_instant(value: str) -> datetime:
    """ISO 8601, with 'Z' or an offset; naive means UTC. A '+' that a query string turned into ' ' is restored."""
    text = str(value).strip()
    if "T" in text and " " in text:
        text = text.replace(" ", "+")
    instant = datetime.fromisoformat(text)
    # In UTC, as the database compares it: an offset can push year 1 or 9999 out of range (OverflowError).
    return instant.astimezone(dt_timezone.utc) if instant.tzinfo else instant.replace(tzinfo=dt_timezone.utc)


def encode_cursor(key: SortKey) -> str:
    at, kind, history_id = key
    return base64.urlsafe_b64encode(json.dumps([at.isoformat(), kind, history_id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> SortKey:
    try:
        at, kind, history_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return parse_instant(at), int(kind), int(history_id)
    except (ValueError, TypeError, OverflowError, binascii.Error):
        raise InvalidQuery({"cursor": ["not a cursor this API gave out"]}) from None


# ---- rows --------------------------------------------------------------------------------------------

def audit_rows(query: AuditQuery, after: SortKey | None = None, limit: int | None = None) -> Iterator[tuple[SortKey, dict]]:
    """(sort key, row) of every matching history row, oldest first, merged across the kinds lazily.

    `after` resumes behind a row already seen (a cursor); `limit` bounds each kind's query
    (a page needs no more than that many from any one kind).
    """
    streams = [
        _stream(index, kind, model, query, after, limit)
        for index, (kind, model) in enumerate(KINDS)
        if any(kind == name for family in query.families for name, _ in FAMILIES[family])
    ]
    merged = heapq.merge(*streams, key=lambda pair: pair[0])
    return itertools.islice(merged, limit) if limit is not None else merged


def _stream(index: int, kind: str, model: type[Model], query: AuditQuery, after: SortKey | None, limit: int | None):
    if model in SNAPSHOTS:
        yield from _snapshot_stream(index, kind, model, query, after, limit)
        return
    records = _records(model, query, index, after)
    masked = query.mask_sensitive and model is Proposal
    if masked:
        records = records.select_related("connector")  # which fields are sensitive depends on the connector
    if limit is not None:
        records = records[:limit]
    fields = [field for field in model.history.model.tracked_fields if not field.primary_key]
    for chunk in _chunks(records.iterator(chunk_size=CHUNK), CHUNK):
        previous = model.history.in_bulk([r.prev_history_id for r in chunk if r.prev_history_id], field_name="history_id")
        for record in chunk:
            row = _row(kind, record, previous.get(record.prev_history_id), fields)
            yield (record.history_date, index, record.history_id), _masked(row, record) if masked else row


def _masked(row: dict[str, Any], record) -> dict[str, Any]:
    """A proposal's row with the values of its sensitive fields masked, old and new."""
    hidden = masking.sensitive_fields(record)
    row["changes"] = [{**change, "old": masking.mask_field(change["field"], change["old"], hidden),
                       "new": masking.mask_field(change["field"], change["new"], hidden)} for change in row["changes"]]
    return row


def _records(model: type[Model], query: AuditQuery, index: int, after: SortKey | None) -> QuerySet:
    """One kind's history rows in the window, each with the id of its object's previous row."""
    pk = model._meta.pk.attname
    previous = model.history.filter(**{pk: OuterRef(pk)}, history_id__lt=OuterRef("history_id")).order_by("-history_id")
    records = model.history.select_related("history_user").annotate(
        prev_history_id=Subquery(previous.values("history_id")[:1])
    )
    return _window(records, "history_date", "history_id", query, index, after)


def _window(records: QuerySet, at: str, key: str, query: AuditQuery, index: int, after: SortKey | None) -> QuerySet:
    if query.since:
        records = records.filter(**{f"{at}__gte": query.since})
    if query.until:
        records = records.filter(**{f"{at}__lt": query.until})
    if after:
        records = records.filter(_behind(after, index, at, key))
    return records.order_by(at, key)


def _behind(after: SortKey, index: int, at: str = "history_date", key: str = "history_id") -> Q:
    """Rows of kind `index` that sort after `after` in (time, kind, id) order."""
    instant, kind, history_id = after
    if index > kind:
        return Q(**{f"{at}__gte": instant})
    if index < kind:
        return Q(**{f"{at}__gt": instant})
    return Q(**{f"{at}__gt": instant}) | Q(**{at: instant, f"{key}__gt": history_id})


def _snapshot_stream(index: int, kind: str, model: type[Model], query: AuditQuery, after: SortKey | None, limit: int | None):
    spec = SNAPSHOTS[model]
    related = [name for name in (spec.user, spec.proposal) if name]
    records = _window(model.objects.select_related(*related), spec.at, "pk", query, index, after)
    if limit is not None:
        records = records[:limit]
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    for record in records.iterator(chunk_size=CHUNK):
        user = getattr(record, spec.user) if spec.user else None
        proposal = getattr(record, spec.proposal) if spec.proposal else None
        yield (getattr(record, spec.at), index, record.pk), {
            "object": kind,
            "id": plain(record.pk),
            "history_id": None,
            "at": plain(getattr(record, spec.at)),
            "user": user.get_username() if user else None,
            "reason": (getattr(record, spec.reason) or None) if spec.reason else None,
            "type": "+",
            "rule": _rule(proposal.decision) if proposal else None,
            "changes": [{"field": f.name, "old": None, "new": plain(getattr(record, f.attname))} for f in fields],
        }


def _rule(decision: dict | None) -> str | None:
    return (decision or {}).get("rule") or None


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _row(kind: str, record, previous, fields) -> dict[str, Any]:
    user = record.history_user
    return {
        "object": kind,
        "id": plain(getattr(record, record.instance_type._meta.pk.attname)),
        "history_id": record.history_id,
        "at": plain(record.history_date),
        "user": user.get_username() if user else None,
        "reason": record.history_change_reason,
        "type": record.history_type,
        "rule": _rule(record.decision) if kind == "proposal" else None,
        "changes": changes(record, previous, fields),
    }


def changes(record, previous, fields) -> list[dict[str, Any]]:
    """Field by field, what this row changed: against the previous row, or from/to nothing when created/deleted."""
    result = []
    for field in fields:
        value = getattr(record, field.attname)
        if record.history_type == "-":
            old, new = value, None
        else:
            old, new = (getattr(previous, field.attname) if previous and record.history_type != "+" else None), value
        if old != new:
            result.append({"field": field.name, "old": plain(old), "new": plain(new)})
    return result


def plain(value: Any) -> Any:
    """A JSON value that reads the same in the API, JSONL and CSV."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (Decimal, UUID)):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    return str(value)


# ---- export formats ----------------------------------------------------------------------------------

def write_jsonl(rows: Iterable[dict], out: IO[str]) -> int:
    """One JSON object per line. Returns the number of rows."""
    count = 0
    for row in rows:
        out.write(json_text(row) + "\n")
        count += 1
    return count


def write_csv(rows: Iterable[dict], out: IO[str]) -> int:
    """One line per changed field (a row without changes keeps one line); `old` and `new` are JSON,
    so null, "" and 0 stay distinct. Returns the number of history rows."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerows(_csv_lines(row))
        count += 1
    return count


class _Text:
    def write(self, text: str) -> str:
        return text


def csv_text(rows: Iterable[dict]) -> Iterator[str]:
    """The CSV export as a stream of lines (for a streaming HTTP response)."""
    writer = csv.DictWriter(_Text(), fieldnames=CSV_COLUMNS)
    yield writer.writeheader()
    for row in rows:
        for line in _csv_lines(row):
            yield writer.writerow(line)


def jsonl_text(rows: Iterable[dict]) -> Iterator[str]:
    return (json_text(row) + "\n" for row in rows)


def _csv_lines(row: dict) -> list[dict]:
    head = {name: printable(row[name]) if isinstance(row[name], str) else row[name] for name in CSV_COLUMNS[:8]}
    return [{**head, **_csv_change(change)} for change in row["changes"] or [{}]]


def _csv_change(change: dict) -> dict[str, str]:
    if not change:
        return {"field": "", "old": "", "new": ""}
    return {"field": change["field"], "old": json_text(change["old"]), "new": json_text(change["new"])}
