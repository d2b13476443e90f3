"""What the audited database backends add: the transaction's decision-log event, written just before it commits.

Django has no pre-commit hook, so the backends (`ledger.backends.sqlite3`, `ledger.backends.postgresql`,
selected by hitlgov.settings) wrap the low-level commit and savepoint calls. Everything else is Django's.
"""

from __future__ import annotations

from ledger import capture


class AuditedConnection:
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ledger_pending: list = []

    def _commit(self):
        capture.flush(self)
        return super()._commit()

    def _rollback(self):
        self.ledger_pending.clear()
        return super()._rollback()

    def _savepoint_commit(self, sid):
        super()._savepoint_commit(sid)
        capture.savepoint_committed(self)

    def _savepoint_rollback(self, sid):
        super()._savepoint_rollback(sid)
        capture.savepoint_rolled_back(self)

    def _close(self):
        self.ledger_pending.clear()
        return super()._close()
