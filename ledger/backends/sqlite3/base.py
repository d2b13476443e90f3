"""SQLite, with the decision log written in every transaction (ledger.backends.audited)."""

from django.db.backends.sqlite3 import base, operations

from ledger.backends.audited import AuditedConnection
from ledger.chain import sha256

TRIGGERS = {
    "ledger_event_no_update": "UPDATE",
    "ledger_event_no_delete": "DELETE",
}


def trigger_sql() -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {op} ON ledger_event "
        f"BEGIN SELECT RAISE(ABORT, 'decision log events are append-only: {op} refused'); END"
        for name, op in TRIGGERS.items()
    ]


class DatabaseOperations(operations.DatabaseOperations):
    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        """`manage.py flush` (and the test runner's) empties every table: the guard is lifted only for that."""
        statements = super().sql_flush(style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
        if "ledger_event" not in tables:
            return statements
        return [f"DROP TRIGGER IF EXISTS {name}" for name in TRIGGERS] + statements + trigger_sql()


class DatabaseWrapper(AuditedConnection, base.DatabaseWrapper):
    ops_class = DatabaseOperations

    def get_new_connection(self, conn_params):
        """SQLite has no SHA-256: the decision log's INSERT hashes with Python's (ledger.chain.append)."""
        connection = super().get_new_connection(conn_params)
        connection.create_function("ledger_sha256", 1, sha256, deterministic=True)
        return connection
