"""Values read by a hand-written statement, made what the ORM would have made of them.

A raw cursor returns what the driver gives: SQLite's text datetimes, 0/1 booleans, floats for
decimals. A queryset runs each column through the backend's and the field's converters; these
functions run the same ones, looked up once per field. Shared by the apps (the API key, the risk
statement, the connector a submission names, the sandbox's record), so it lives with the project.
"""

from __future__ import annotations

import functools
from typing import Any

from django.db import connection, models

Converters = tuple[tuple[Any, Any], ...]  # (converter, the column expression it is called with)


@functools.cache
def converters(model: type[models.Model], field_name: str, vendor: str) -> Converters:
    """The converters a query of `model` applies to `field_name` on this backend (`vendor` keys the cache)."""
    field = model._meta.get_field(field_name)
    column = field.get_col(model._meta.db_table)
    return tuple((convert, column) for convert in connection.ops.get_db_converters(column) + field.get_db_converters(connection))


def as_read(value: Any, model: type[models.Model], field_name: str) -> Any:
    """`value` of `model.field_name` as the ORM reads it."""
    for convert, column in converters(model, field_name, connection.vendor):
        value = convert(value, column, connection)
    return value


def instance(model: type[models.Model], fields: tuple[models.Field, ...], values: tuple) -> Any:
    """A `model` instance from its concrete `fields`' values as the driver returned them; None for the
    columns of a LEFT JOIN that found no row (its primary key, first, is NULL)."""
    if values[0] is None:
        return None
    converted = [as_read(value, model, field.name) for field, value in zip(fields, values)]
    return model.from_db(connection.alias, [field.attname for field in fields], converted)


def first(model: type[models.Model], where: str, params: list[Any]) -> Any:
    """The first `model` row (by primary key) meeting `where` (SQL over its own columns, %s for `params`), as the
    ORM would build it; None if there is none. The statement is written once per model, condition and backend:
    for a one-table read on every request the ORM's compilation costs more than the read itself."""
    sql, fields = _first_statement(model, where, connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else instance(model, fields, row)


@functools.cache
def _first_statement(model: type[models.Model], where: str, vendor: str) -> tuple[str, tuple[models.Field, ...]]:
    quote, opts = connection.ops.quote_name, model._meta
    fields = tuple(opts.concrete_fields)
    columns = ", ".join(quote(field.column) for field in fields)
    return f"SELECT {columns} FROM {quote(opts.db_table)} WHERE {where} ORDER BY {quote(opts.pk.column)} LIMIT 1", fields
