"""A sandbox order-management system: shipments and their documents, kept in HITL Gov's database.

The logistics exceptions of seed 003's mini-case run against it: routine status updates,
document matching and customer notifications, and the exceptions a person must see (failed
delivery, missing documents, wrong destination, damaged goods, delayed transfer, payment
disputes). Records are `shipment` and `document` SandboxRecords; everything else (idempotent
writes, compensation, previews) is the sandbox's.
"""

from __future__ import annotations

from .base import register
from .sandbox import SandboxAdapter

ORDER_ACTIONS = {
    "read": "read",
    "update_shipment_status": "update",
    "match_document": "update",
    "notify_customer": "send",
    "report_failed_delivery": "update",
    "request_missing_documents": "update",
    "correct_destination": "update",
    "report_damage": "update",
    "delay_transfer": "update",
    "open_payment_dispute": "update",
}


@register
class OrderManagementSandbox(SandboxAdapter):
    kind = "sandbox_orders"
    capabilities = frozenset({"read", "update", "send"})
    actions = ORDER_ACTIONS
    sensitive_fields = frozenset({"destination", "consignee", "claim_amount", "disputed_amount"})
    money_fields = {"report_damage": frozenset({"claim_amount"}), "open_payment_dispute": frozenset({"disputed_amount"})}
