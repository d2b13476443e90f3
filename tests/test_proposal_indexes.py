"""What the proposals' leaner indexes must still serve (issue 14): a column indexed only where it is set is
still sought by index, and the expiry sweep still walks its deadline in order instead of sorting."""

from __future__ import annotations

import pytest
from django.db import connection

from approvals import sweeps
from approvals.models import SET_ON_FEW_ROWS, Proposal


def plan(sql: str, params) -> str:
    """The planner's plan; PostgreSQL told not to read a test's few rows whole, as it would at any size."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute("EXPLAIN " + sql, params)
            return "\n".join(row[0] for row in cursor.fetchall())
        finally:
            cursor.execute("RESET enable_seqscan")


@pytest.mark.parametrize("column", sorted(SET_ON_FEW_ROWS))
def test_the_proposals_a_person_or_a_parent_is_named_on_are_sought_by_index(column, submit, people):
    """What deleting a user makes Django look up (PROTECT or SET_NULL), and a proposal's branches: the
    columns are NULL on nearly every row and indexed only where set, which must still serve `col IN (...)`."""
    submit("first")
    named = people.finance1.pk if column != "parent" else Proposal.objects.get().pk
    sql, params = Proposal.objects.filter(**{f"{column}__in": [named]}).order_by().values("pk").query.sql_with_params()

    found = plan(sql, params)

    if connection.vendor == "sqlite":
        assert f"USING INDEX proposal_{SET_ON_FEW_ROWS[column]}_set" in found.replace("COVERING ", ""), found
    else:
        assert f"using proposal_{SET_ON_FEW_ROWS[column]}_set" in found and "Seq Scan" not in found, found


@pytest.mark.skipif(connection.vendor != "postgresql",
                    reason="SQLite's plan of the same question is asked in test_expiry (SEARCH, never SCAN)")
def test_is_anything_expiring_walks_the_deadlines_in_order_without_a_sort(submit):
    """The beat asks it every minute: the first waiting proposal by expiry, read from the index of the rows that
    have an expiry, in its order, and stopped at once; not all waiting rows' deadlines gathered and sorted."""
    first = submit("first")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_proposal")
    sql, params = (sweeps._expiring(first.created_at).order_by("expires_at").values_list("pk", flat=True)[:1]
                   .query.sql_with_params())

    found = plan(sql, params)

    assert "proposal_expires_set" in found and "Sort" not in found, found
