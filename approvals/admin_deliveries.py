"""Callback deliveries in the admin: a read-only record of every event sent and every attempt.

Kept out of approvals/admin.py and registered from ApprovalsConfig.ready(). Nothing here
can add, edit or delete a delivery: the record is evidence of what an integration was told.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.utils.html import format_html

from approvals.models import CallbackDelivery
from hitlgov.governed_admin import EvidenceAdmin


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(EvidenceAdmin):
    list_display = ["created_at", "event", "proposal", "state", "attempts", "last_status", "next_attempt_at", "delivered_at"]
    list_filter = ["state", "event"]
    search_fields = ["proposal__id", "proposal__agent", "url"]
    date_hierarchy = "created_at"
    list_select_related = ["proposal", "proposal__connector"]
    fields = ["proposal", "event", "url", "state", "attempts", "last_status", "last_error", "next_attempt_at",
              "created_at", "delivered_at", "body"]
    readonly_fields = fields

    @admin.display(description="body")
    def body(self, delivery: CallbackDelivery) -> str:
        return format_html("<pre>{}</pre>", json.dumps(delivery.payload, indent=2, sort_keys=True))
