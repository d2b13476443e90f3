"""Values read by a hand-written statement, made what the ORM would have made of them.

A raw cursor returns what the driver gives: SQLite's text datetimes, 0/1 booleans, floats for
decimals. A queryset runs each column through the backend's and the field's converters; these
functions run the same ones, looked up once per field.
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
