"""The sandbox system of record: records kept in HITL Gov's own database.

Deterministic for demos and tests, and a safe place to try any action before it touches
production. It honours idempotency keys like a well-behaved vendor API: a key already
applied to a record is not applied again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import transaction

from hitlgov import raw_rows

from .base import Adapter, Health, PermanentError, RecordNotFound, Target, WriteResult, register

DEFAULT_ACTIONS = {
    "read": "read",
    "update": "update",
    "update_opportunity": "update",
    "update_account": "update",
    "refund": "update",
    "credit": "update",
    "discount": "update",
    "set_status": "update",
    "close_ticket": "update",
    "public_reply": "send",
    "send_email": "send",
    "change_access": "update",
    "delete_record": "delete",
    # the RevOps inbox and the tiered discounts (seeds 002 and 000) on the sandbox CRM
    "send_followup": "send",
    "flag_deal_risk": "update",
    "assign_lead": "update",
    "apply_discount": "update",
}


@register
class SandboxAdapter(Adapter):
    kind = "sandbox"
    capabilities = frozenset({"read", "draft", "update", "send", "delete"})
    actions = DEFAULT_ACTIONS
    sensitive_fields = frozenset({"owner", "email", "price", "amount", "refund_amount", "role"})
    money_fields = {"refund": frozenset({"refund_amount"}), "credit": frozenset({"credit_amount"}),
                    "discount": frozenset({"discount_amount"}), "apply_discount": frozenset({"discount_amount"})}

    def _records(self):
        from connectors.models import SandboxRecord

        return SandboxRecord.objects.filter(connector__slug=self.config["connector_slug"])

    def _lock(self, target: Target):
        """The target's record, locked until the transaction ends: what a write reads."""
        records = self._records().select_for_update(of=("self",))
        try:
            return records.get(type=target.type, record_id=target.id)
        except records.model.DoesNotExist:
            raise self._not_found(target) from None

    def _not_found(self, target: Target) -> RecordNotFound:
        return RecordNotFound(f"no {target.type} {target.id} in sandbox {self.config['connector_slug']}", status=404)

    in_database = True

    def read(self, target: Target) -> dict[str, Any]:
        # Every submission to the sandbox previews through this read: a statement written once per process
        # (hitlgov.raw_rows), where the ORM compiled the same join for each (about 0.8 ms of CPU).
        from connectors.models import Connector, SandboxRecord

        where = (f'connector_id = (SELECT id FROM {Connector._meta.db_table} WHERE slug = %s) '
                 f'AND "type" = %s AND record_id = %s')
        record = raw_rows.first(SandboxRecord, where, [self.config["connector_slug"], target.type, target.id])
        if record is None:
            raise self._not_found(target)
        return dict(record.data)

    def read_for_write(self, target: Target) -> dict[str, Any]:
        self._locked = self._lock(target)  # held until the transaction ends: execute() needs no second read
        return dict(self._locked.data)

    def _held(self, target: Target):
        """The record read_for_write locked, if it is this target's and its transaction is still open."""
        record = getattr(self, "_locked", None)
        if record is None or (record.type, record.record_id) != (target.type, target.id):
            return None
        return record if transaction.get_connection().in_atomic_block else None

    def execute(self, action: str, target: Target | None, changes: Mapping[str, Any], idempotency_key: str) -> WriteResult:
        if target is None:
            raise PermanentError(f"sandbox action {action} needs a target record")
        # No savepoint: inside the executor's transaction a failed write rolls the whole attempt back.
        with transaction.atomic(savepoint=False):
            record = self._held(target) or self._lock(target)
            request = {"action": action, "record": f"{target.type}/{target.id}", "fields": sorted(changes)}
            if idempotency_key in record.applied_keys:
                return WriteResult(after=dict(record.data), request=request, response={"replayed": True})
            if self.actions.get(action) == "delete":
                record.delete()
                return WriteResult(after={}, request=request, response={"deleted": True})
            record.data = {**record.data, **changes}
            record.applied_keys = [*record.applied_keys, idempotency_key][-50:]
            record._change_reason = f"{action} ({idempotency_key})"
            record.save()
        return WriteResult(after=dict(record.data), request=request, response={"written": sorted(changes)})

    def compensate(self, action: str, target: Target | None, before: Mapping[str, Any]) -> WriteResult:
        if target is None:
            raise PermanentError("nothing to compensate without a target record")
        with transaction.atomic():
            record = self._lock(target)
            record.data = {**record.data, **before}
            record._change_reason = f"compensate {action}"
            record.save()
            return WriteResult(after=dict(record.data), request={"compensate": sorted(before)}, response={"restored": True})

    def health(self) -> Health:
        return Health(ok=True, detail=f"{self._records().count()} sandbox records")
