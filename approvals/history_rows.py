"""History rows written in bulk, where one operation creates several: one INSERT instead of one each.

django-simple-history writes a row per save() and none for bulk writes. An operation that
creates rows in bulk (or saves once but has two states to record, as a submission does:
as submitted, then as decided) builds its rows here and writes them in one statement, and
the rows announce themselves as simple-history's would (`post_create_historical_record`,
which approvals.events listens to), so nothing downstream can tell the difference.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from django.db import connection, models
from simple_history.signals import post_create_historical_record


@functools.cache
def history_model(model: type[models.Model]) -> type[models.Model]:
    """The model's history model, looked up once: simple-history's `Model.history` builds a new manager
    class on every access (a few milliseconds each, most of a submission's history cost)."""
    return model.history.model


@functools.cache
def _tracked(model: type[models.Model]) -> tuple[str, ...]:
    return tuple(field.attname for field in history_model(model).tracked_fields)


def snapshot(instance: models.Model) -> dict[str, Any]:
    """The values a history row of `instance` records, as they are now."""
    return {name: getattr(instance, name) for name in _tracked(type(instance))}


def row(instance: models.Model, kind: str, reason: str | None, at: datetime, values: dict[str, Any] | None = None):
    """An unsaved history row of `instance` ("+" created, "~" changed), with `values` if given (a snapshot)."""
    history = history_model(type(instance))
    return history(
        history_date=at, history_type=kind, history_change_reason=reason,
        history_user=getattr(instance, "_history_user", None) or history.get_default_history_user(instance),
        **(values if values is not None else snapshot(instance)),
    )


def write(rows: list, instances: list[models.Model]) -> list:
    """Store `rows` (of one history model, each for the instance at the same position) in one statement."""
    if not rows:
        return []
    history = type(rows[0])
    _insert(history, rows)
    for history_row, instance in zip(rows, instances):
        post_create_historical_record.send(
            sender=history, instance=instance, history_instance=history_row, history_date=history_row.history_date,
            history_user=history_row.history_user, history_change_reason=history_row.history_change_reason, using=None,
        )
    return rows


@functools.cache
def _insert_plan(history: type[models.Model], vendor: str) -> tuple[tuple[models.Field, ...], str, str, str]:
    """The INSERT of `history` rows, written once: the columns (all but the id the database gives), one
    row's placeholders and the RETURNING clause. `bulk_create` compiled all of it on every call, for
    70-odd columns: most of a submission's history cost (bench/intake_cpu.py --profile)."""
    opts, quote = history._meta, connection.ops.quote_name
    fields = tuple(field for field in opts.concrete_fields if not field.primary_key)
    head = f"INSERT INTO {quote(opts.db_table)} ({', '.join(quote(field.column) for field in fields)}) VALUES "
    return fields, head, "(" + ", ".join(["%s"] * len(fields)) + ")", f" RETURNING {quote(opts.pk.column)}"


def _insert(history: type[models.Model], rows: list) -> None:
    """What `history.objects.bulk_create(rows)` does, values prepared by the same field methods, in batches
    the backend accepts; each row gets the id the database gave it, in the order of the VALUES (as
    bulk_create itself relies on)."""
    fields, head, one, returning = _insert_plan(history, connection.vendor)
    size = connection.ops.bulk_batch_size(fields, rows)
    for start in range(0, len(rows), size):
        batch = rows[start:start + size]
        params = [field.get_db_prep_save(field.pre_save(item, True), connection) for item in batch for field in fields]
        with connection.cursor() as cursor:
            cursor.execute(head + ", ".join([one] * len(batch)) + returning, params)
            ids = cursor.fetchall()
        for item, (pk,) in zip(batch, ids, strict=True):
            item.pk, item._state.adding, item._state.db = pk, False, connection.alias


def share_history_managers() -> None:
    """Make `Model.history` build its manager class once instead of on every access.

    django-simple-history 3.13's HistoryDescriptor.__get__ calls Manager.from_queryset(), which
    walks the queryset class with inspect.getmembers, on every access, and every save of a
    tracked model accesses it to write its history row: a few milliseconds per save, about a
    tenth of a submission's CPU. The class it builds is the same every time, so it is kept on the
    descriptor. Called once from ApprovalsConfig.ready().
    """
    from simple_history.manager import HistoryDescriptor

    if getattr(HistoryDescriptor, "_manager_shared", False):
        return

    def __get__(self, instance, owner):
        manager = self.__dict__.get("_shared_manager")
        if manager is None:
            manager = self._shared_manager = self.manager_class.from_queryset(self.queryset_class)
        return manager(self.model, instance)

    HistoryDescriptor.__get__ = __get__
    HistoryDescriptor._manager_shared = True
