"""Long lists of ids as one parameter on PostgreSQL: the sweeps' batches name thousands of rows.

`filter(pk__any_of=ids)` means `filter(pk__in=ids)`. On PostgreSQL it is written `pk = ANY(%s)`
with the ids as one array parameter: psycopg writes the parameters into the statement on the
client and keeps its parse of a statement only while the text is short, so a 2,000-value
`IN (%s, ...)` list was split and quoted anew every time (about 5 ms a statement, and Django's own
per-value placeholders besides). Other databases keep `IN`, which SQLite handles well.
`in_list` is the same choice for the sweeps' hand-written SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, ForeignKey
from django.db.models.lookups import In


@ForeignKey.register_lookup  # a relation takes only its own lookups, not every field's
@Field.register_lookup
class AnyOf(In):
    lookup_name = "any_of"

    def as_postgresql(self, compiler: Any, connection: BaseDatabaseWrapper) -> tuple[str, tuple]:
        if not self.rhs_is_direct_value():
            return super().as_sql(compiler, connection)  # a subquery: IN (SELECT ...) as usual
        field = self.lhs.output_field
        values = [field.get_db_prep_value(value, connection, prepared=True) for value in self.rhs if value is not None]
        if not values:
            raise EmptyResultSet  # as `in` does: matches nothing
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} = ANY(%s)", (*lhs_params, values)


def in_list(column: str, values: Sequence, connection: BaseDatabaseWrapper) -> tuple[str, list]:
    """(SQL, params) of "`column` is one of `values`" (values as the database stores them, not empty)."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)
