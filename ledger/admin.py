"""The decision log in the admin: events read-only with the chain's head and latest anchor; the board's
exception categories."""

from __future__ import annotations

from django.contrib import admin

from hitlgov.governed_admin import EvidenceAdmin, GovernedRecordAdmin
from ledger import anchors
from ledger.models import Event, ExceptionCategory


@admin.register(Event)
class EventAdmin(EvidenceAdmin):
    list_display = ("position", "at", "user", "reason", "category", "agent", "action")
    list_filter = ("category",)
    search_fields = ("reason", "user", "agent", "subject")
    ordering = ("-position",)
    change_list_template = "admin/ledger/event/change_list.html"

    def changelist_view(self, request, extra_context=None):
        head = Event.objects.order_by("-position").values_list("position", "hash").first()
        anchor = anchors.latest_anchor()
        matches = anchor is not None and Event.objects.filter(position=anchor.position, hash=anchor.hash).exists()
        context = {**(extra_context or {}), "head": head, "anchor": anchor, "anchor_matches": matches}
        return super().changelist_view(request, context)


@admin.register(ExceptionCategory)
class ExceptionCategoryAdmin(GovernedRecordAdmin):
    """The board adds categories; a category once used stays (events name it), so nothing is deleted."""

    list_display = ("slug", "label", "description")

    def get_readonly_fields(self, request, obj=None):
        return ("slug",) if obj else ()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
