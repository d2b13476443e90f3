"""Break-glass events in the admin: work closed by hand without the approvals the policy required.

Read-only for everyone: the board reviews who asked, who confirmed and why. Registered from
ApprovalsConfig.ready(), like the callback deliveries.
"""

from __future__ import annotations

from django.contrib import admin

from approvals.models import BreakGlass
from hitlgov.governed_admin import EvidenceAdmin


@admin.register(BreakGlass)
class BreakGlassAdmin(EvidenceAdmin):
    list_display = ["created_at", "proposal", "requested_by", "confirmed_by", "status_before", "reason"]
    list_select_related = ["proposal", "proposal__connector", "requested_by", "confirmed_by"]
    date_hierarchy = "created_at"
    fields = ["proposal", "requested_by", "confirmed_by", "status_before", "reason", "confirmation", "created_at"]
    readonly_fields = fields
