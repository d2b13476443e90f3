"""The outbox in the admin: what was queued, whether the broker took it, and why not.

Read-only, like the callback deliveries: operators watch it (a row that stays unsent with a
growing number of attempts means the broker is down); the sweep, not a person, sends it.
"""

from __future__ import annotations

from django.contrib import admin

from approvals.models import OutboxMessage
from hitlgov.governed_admin import EvidenceAdmin


@admin.register(OutboxMessage)
class OutboxMessageAdmin(EvidenceAdmin):
    list_display = ["created_at", "task", "proposal", "due_at", "sent_at", "attempts", "last_error"]
    list_filter = [("sent_at", admin.EmptyFieldListFilter), "task"]
    search_fields = ["proposal__id", "task", "last_error"]
    date_hierarchy = "created_at"
    list_select_related = ["proposal", "proposal__connector"]
    fields = ["task", "args", "proposal", "created_at", "due_at", "sent_at", "attempts", "last_error"]
    readonly_fields = fields

