"""Hashing: the canonical form of an event and of a history row, and appending to the chain.

The chain is global (one sequence of positions), so one walk verifies everything. Appending
takes the chain's head under a lock held until the transaction commits: the database's write
lock on SQLite (transactions begin IMMEDIATE), a transaction-scoped advisory lock on PostgreSQL.
The head is read inside the INSERT (INSERT ... SELECT, the hash computed by the database), so that
costs one statement per transaction (two on PostgreSQL: the lock must come first, because a
statement sees the rows committed when it starts), whatever the transaction wrote.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import re
import uuid
from collections.abc import Mapping
from datetime import date, datetime, time, timezone as dt_timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Callable, NamedTuple

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

GENESIS = "0" * 64
PG_LOCK_KEY = 0x4C454447  # "LEDG": the advisory lock that serialises appends on PostgreSQL

# Fields of a history row that retention may purge (model label -> field names). Their digest is
# kept apart from the rest of the row, so a purged row still verifies. Apps register theirs.
PAYLOAD_FIELDS: dict[str, tuple[str, ...]] = {}


def register_payload(model_label: str, *fields: str) -> None:
    """Declare evidence payload fields of a model (its history rows inherit them)."""
    PAYLOAD_FIELDS[model_label.lower()] = tuple(fields)
    _plan.cache_clear()


# What json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, cls=DjangoJSONEncoder)
# builds on every call, built once (the encoder keeps no state between calls).
_CANONICAL = DjangoJSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical(value: Any) -> str:
    # ASCII-escaped: a lone surrogate a row may hold (stored before the edge refused them) still hashes.
    return _CANONICAL.encode(value)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def instant(value: datetime) -> str:
    return value.astimezone(dt_timezone.utc).isoformat()


# ---- history rows --------------------------------------------------------------------------

def row_values(field: models.Field, value: Any) -> Any:
    """A field's value as it reads after a round trip through the database, whichever side it came from."""
    if value is None:
        return None
    if isinstance(field, models.JSONField):
        return json.loads(json.dumps(value, cls=field.encoder or DjangoJSONEncoder))
    if isinstance(field, models.ForeignKey):
        field = field.target_field
    if isinstance(field, models.DecimalField):
        return str(Decimal(str(value)).quantize(Decimal(1).scaleb(-field.decimal_places)))
    value = field.to_python(value)
    if isinstance(value, datetime):
        return instant(value if timezone.is_aware(value) else timezone.make_aware(value, dt_timezone.utc))
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, Decimal)):
        return str(value)
    if isinstance(value, str):
        return str(value)  # an enum member reads back as its plain value
    return value


def _stored_converter(field: models.Field) -> tuple[type | None, Any]:
    """(the Python type a field's value usually has, what row_values makes of a value of exactly that
    type), or (None, None) when only row_values will do. Digesting a sweep's thousands of history
    rows spent most of its time in `to_python`; for these types it changes nothing."""
    target = field.target_field if isinstance(field, models.ForeignKey) else field
    if isinstance(target, (models.JSONField, models.DecimalField)):
        return None, None
    if isinstance(target, models.DateTimeField):
        return datetime, lambda value: instant(value) if value.tzinfo is not None else row_values(field, value)
    if isinstance(target, models.UUIDField):
        return uuid.UUID, str
    if isinstance(target, models.BooleanField):
        return bool, None
    if isinstance(target, models.IntegerField):  # AutoField and its kin too
        return int, None
    if isinstance(target, models.FloatField):  # to_python is float(value): a float is itself
        return float, None
    if isinstance(target, (models.CharField, models.TextField)):
        return str, None
    return None, None


def source_label(history_model: type[models.Model]) -> str:
    return history_model.instance_type._meta.label_lower


def history_digests(row: models.Model) -> dict[str, str]:
    """{"digest": ...} over the whole history row, or with "payload" apart when the model has payload fields."""
    values = {field.attname: getattr(row, field.attname) for field in type(row)._meta.concrete_fields}
    return _digests(type(row), values, from_database=False)


def history_entry(row: models.Model) -> dict[str, Any]:
    values = {field.attname: getattr(row, field.attname) for field in type(row)._meta.concrete_fields}
    return _entry(type(row), values)


def _entry(history_model: type[models.Model], values: dict[str, Any]) -> dict[str, Any]:
    source_pk = history_model.instance_type._meta.pk.attname
    return {
        "model": history_model._meta.label_lower,
        "history_id": values[history_model._meta.pk.attname],
        "id": str(values[source_pk]),
        "type": values["history_type"],
        **_digests(history_model, values, from_database=False),
    }


_AS_READ = object()  # a value kept as the database driver returned it


@functools.cache
def _plan(history_model: type[models.Model], from_database: bool) -> tuple[tuple, ...]:
    """Per field: (field, attname, fast type, its conversion, whether it is payload), worked out once
    per model. JSON decoded from the database by the default decoder is plain JSON already, so
    row_values' round trip through the encoder would give back an equal value: it is skipped."""
    payload_names = PAYLOAD_FIELDS.get(source_label(history_model), ())
    plan = []
    for field in history_model._meta.concrete_fields:
        if from_database and isinstance(field, models.JSONField) and field.decoder is None:
            kind, convert = _AS_READ, None
        else:
            kind, convert = _stored_converter(field)
        plan.append((field, field.attname, kind, convert, field.name in payload_names))
    return tuple(plan)


def _digests(history_model: type[models.Model], values: dict[str, Any], from_database: bool) -> dict[str, str]:
    core, payload = {}, {}
    for field, name, kind, convert, in_payload in _plan(history_model, from_database):
        (payload if in_payload else core)[name] = _settled(field, kind, convert, values[name])
    return _hashed(history_model, core, payload)


def _settled(field: models.Field, kind: Any, convert: Any, value: Any) -> Any:
    """row_values(field, value), through the plan's shortcut when the value has the usual type."""
    if value is None or kind is _AS_READ:
        return value
    if type(value) is not kind:
        return row_values(field, value)
    return value if convert is None else convert(value)


def _hashed(history_model: type[models.Model], core: dict, payload: dict) -> dict[str, str]:
    digests = {"digest": sha256(canonical(core))}
    if PAYLOAD_FIELDS.get(source_label(history_model)):
        digests["payload"] = sha256(canonical(payload))
    return digests


# ---- history rows as a statement returned them (the set-based sweeps) --------------------------

def history_entries_returned(history_model: type[models.Model], rows: list[tuple], connection: BaseDatabaseWrapper,
                             ) -> list[dict[str, Any]]:
    """history_entry of each row as `connection`'s driver returned it (every concrete field, in
    field order), in history_id order, without building a model instance per row: the sweeps log
    thousands of rows a batch. A field's raw value goes through the converters a query of the model
    applies, then as in `_digests`; on SQLite, the driver's naive UTC datetimes and the hex text
    Django stores for a uuid go straight to their digest text (Django's converters, then the
    digest's own conversion, cost more than the digest).

    Rows whose values have the same Python types read the same way, so the work per field is
    planned once per such layout (`_layout`): the values that read as themselves (text, numbers,
    None, most of a proposal's 67) are taken in one step, and only the rest are converted."""
    readers = _readers(history_model, connection)
    names = [field.attname for field in history_model._meta.concrete_fields]
    payload_names = set(PAYLOAD_FIELDS.get(source_label(history_model), ()))
    in_payload = [field.name in payload_names for field in history_model._meta.concrete_fields]
    at = {name: i for i, name in enumerate(names)}
    history_id, source_id, history_type = at[history_model._meta.pk.attname], at[history_model.instance_type._meta.pk.attname], at["history_type"]
    label = history_model._meta.label_lower
    layouts: dict[tuple, tuple] = {}
    entries = []
    for row in sorted(rows, key=lambda row: row[history_id]):
        types = tuple(map(type, row))
        layout = layouts.get(types) or layouts.setdefault(types, _layout(types, readers, names, in_payload))
        (core_names, core_taken, core_read), (payload_names_, payload_taken, payload_read) = layout
        core = dict(zip(core_names, core_taken(row)))
        core.update((name, read(row[i])) for i, name, read in core_read)
        payload = dict(zip(payload_names_, payload_taken(row)))
        payload.update((name, read(row[i])) for i, name, read in payload_read)
        entries.append({"model": label, "history_id": row[history_id], "id": str(_read_id(readers[source_id].read, row[source_id])),
                        "type": row[history_type], **_hashed(history_model, core, payload)})
    return entries


def _read_id(read: Callable[[Any], Any], raw: Any) -> Any:
    return raw if raw is None else read(raw)


class _Reader(NamedTuple):
    """How a field's raw value (never None) reads: `read` for any value; `as_is`, the Python types
    whose values `read` gives back unchanged; `direct`, types for which a cheaper function (of the
    raw value) gives what `read` would."""
    read: Callable[[Any], Any]
    as_is: tuple[type, ...] = ()
    direct: Mapping[type, Callable[[Any], Any]] = MappingProxyType({})


def _layout(types: tuple[type, ...], readers: list[_Reader], names: list[str], in_payload: list[bool]) -> tuple:
    """For rows whose values have these types: per part (core, payload), the names of the values
    kept as they are, a function taking them from a row, and (index, name, function) of the rest."""
    parts = []
    for payload in (False, True):
        kept, converted = [], []
        for i, (kind, reader) in enumerate(zip(types, readers)):
            if in_payload[i] != payload:
                continue
            if kind is type(None) or kind in reader.as_is:
                kept.append(i)
            else:
                converted.append((i, names[i], reader.direct.get(kind, reader.read)))
        parts.append(([names[i] for i in kept], _taker(kept), converted))
    return tuple(parts)


def _taker(indices: list[int]) -> Callable[[tuple], tuple]:
    """row -> the values at `indices`, as a tuple (itemgetter gives a bare value for one index)."""
    if len(indices) > 1:
        return operator.itemgetter(*indices)
    return (lambda row: ()) if not indices else (lambda row, i=indices[0]: (row[i],))


def _readers(history_model: type[models.Model], connection: BaseDatabaseWrapper) -> list[_Reader]:
    """Per field, raw database value (never None) -> what row_values makes of the value a query reads."""
    compiler = history_model._default_manager.none().query.get_compiler(connection=connection)
    columns = [field.get_col(history_model._meta.db_table) for field in history_model._meta.concrete_fields]
    converters = compiler.get_converters(columns)
    readers = []
    for i, (field, _, kind, convert, _) in enumerate(_plan(history_model, True)):
        convs, expression = converters.get(i, ((), columns[i]))
        readers.append(_reader(field, kind, convert, list(convs), expression, connection))
    return readers


_HEX_UUID = re.compile(r"[0-9a-f]{32}")
_SCAN_JSON = json.JSONDecoder().scan_once  # what json.loads applies after skipping leading whitespace


def _reader(field: models.Field, kind: Any, convert: Any, convs: list, expression: Any,
            connection: BaseDatabaseWrapper) -> _Reader:
    def general(raw: Any) -> Any:
        for converter in convs:
            raw = converter(raw, expression, connection)
        return _settled(field, kind, convert, raw)

    target = field.target_field if isinstance(field, models.ForeignKey) else field
    if connection.vendor == "sqlite" and isinstance(target, models.DateTimeField) and connection.timezone_name == "UTC":
        def sqlite_instant(raw: Any) -> Any:
            # SQLite's driver hands back the naive UTC datetime Django stored; made aware in UTC and
            # written as instant() writes it, that is its own isoformat with "+00:00".
            if type(raw) is datetime and raw.tzinfo is None:
                return raw.isoformat() + "+00:00"
            return general(raw)
        return _Reader(sqlite_instant)
    if connection.vendor == "sqlite" and isinstance(target, models.UUIDField):
        def sqlite_uuid(raw: Any) -> Any:
            # Django stores uuid.hex (32 lowercase digits); str(UUID) is the same digits, dashed.
            if type(raw) is str and _HEX_UUID.fullmatch(raw):
                return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"
            return general(raw)
        return _Reader(sqlite_uuid)
    if kind is _AS_READ and convs == [field.from_db_value]:
        def json_text(raw: Any) -> Any:
            # from_db_value is json.loads(raw), or raw if that fails. The decoder's own scanner, with
            # json.loads' checks left to it: text that is one JSON value from its first character
            # to its last (as a database writes it) reads the same; anything else goes the long way.
            if type(raw) is str:
                try:
                    value, end = _SCAN_JSON(raw, 0)
                except (StopIteration, ValueError):
                    return general(raw)
                if end == len(raw):
                    return value
            return general(raw)
        return _Reader(json_text)
    if convs or kind in (None, _AS_READ):
        return _Reader(general)
    # No converter: a value of the plan's type is `_settled`'s shortcut, the value itself or `convert`'s.
    if convert is None:
        return _Reader(general, as_is=(kind,))
    return _Reader(general, direct={kind: convert})


# ---- events --------------------------------------------------------------------------------

def body(event) -> dict[str, Any]:
    """What an event's hash covers. Not its position: the links alone order the chain, so an event
    inserted in the middle (later ones renumbered) shows as the one its successor does not link to."""
    return {
        "at": instant(event.at), "user": event.user, "reason": event.reason,
        "category": event.category, "subject": event.subject, "agent": event.agent, "action": event.action, "records": event.records,
    }


def event_hash(prev_hash: str, event) -> str:
    return sha256(prev_hash + canonical(body(event)))


# The hash in SQL: what `sha256` computes, over the head's hash and the event's canonical body (ASCII).
SQL_SHA256 = {
    "postgresql": "encode(sha256(convert_to({}, 'UTF8')), 'hex')",
    "sqlite": "ledger_sha256({})",  # registered on each SQLite connection (ledger.backends.sqlite3)
}


def append(connection: BaseDatabaseWrapper, *, records: list[dict], reason: str = "", user: str = "",
           category: str = "", subject: str = "", agent: str = "", action: str = ""):
    """Write one event after the chain's head, in the connection's current transaction: one INSERT
    that reads the head, links to it and hashes (plus the advisory lock on PostgreSQL)."""
    from ledger.models import Event

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [PG_LOCK_KEY])
    event = Event(at=timezone.now(), user=user[:150], reason=reason, category=category[:50],
                  subject=subject[:64], agent=agent[:100], action=action[:100], records=records)
    given = [field for field in Event._meta.concrete_fields if field.name in body(event)]
    quote = connection.ops.quote_name
    table = quote(Event._meta.db_table)
    columns = ", ".join(quote(field.column) for field in [*given, *(Event._meta.get_field(name) for name in
                                                                       ("position", "prev_hash", "hash"))])
    digest = SQL_SHA256[connection.vendor].format("head.hash || %s")
    sql = (
        f"INSERT INTO {table} ({columns}) "
        f"SELECT {', '.join(['%s'] * len(given))}, head.position + 1, head.hash, {digest} "
        f"FROM (SELECT COALESCE((SELECT position FROM {table} ORDER BY position DESC LIMIT 1), 0) AS position, "
        f"COALESCE((SELECT hash FROM {table} ORDER BY position DESC LIMIT 1), '{GENESIS}') AS hash) AS head "
        f"RETURNING id, position, prev_hash, hash"
    )
    params = [field.get_db_prep_save(getattr(event, field.attname), connection) for field in given]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, canonical(body(event))])
        event.pk, event.position, event.prev_hash, event.hash = cursor.fetchone()
    event._state.adding, event._state.db = False, connection.alias
    return event
