"""PostgreSQL, with the decision log written in every transaction (ledger.backends.audited)."""

from django.db.backends.postgresql import base

from ledger.backends.audited import AuditedConnection


class DatabaseWrapper(AuditedConnection, base.DatabaseWrapper):
    pass
