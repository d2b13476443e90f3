"""Connector set-up for operators (credentials show as references, never values) and execution records.

Rollback batches act on proposals, so their admin lives in `approvals.admin_rollbacks`."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils.html import format_html_join
from simple_history.admin import SimpleHistoryAdmin

from connectors.models import Connector, Execution, SandboxRecord
from connectors.services import check_health


@admin.register(Connector)
class ConnectorAdmin(SimpleHistoryAdmin):
    list_display = ["slug", "name", "kind", "enabled", "dry_run", "health_ok", "health_checked_at"]
    list_filter = ["kind", "enabled", "dry_run"]
    readonly_fields = ["credential_references", "health_ok", "health_detail", "health_checked_at"]
    actions = ["run_health_check"]

    @admin.display(description="credentials in use")
    def credential_references(self, connector: Connector) -> str:
        refs = sorted((connector.credentials or {}).items())
        return format_html_join("", "<div>{}: {}</div>", ((name, ref) for name, ref in refs)) or "none"

    @admin.action(description="Check health now")
    def run_health_check(self, request, queryset):
        for connector in queryset:
            health = check_health(connector)
            level = messages.SUCCESS if health.ok else messages.ERROR
            messages.add_message(request, level, f"{connector.slug}: {'healthy' if health.ok else 'unhealthy'} {health.detail}")


@admin.register(SandboxRecord)
class SandboxRecordAdmin(SimpleHistoryAdmin):
    list_display = ["__str__", "type", "record_id", "updated_at"]
    list_filter = ["connector", "type"]
    search_fields = ["record_id"]


@admin.register(Execution)
class ExecutionAdmin(admin.ModelAdmin):
    list_display = ["proposal", "kind", "attempt", "outcome", "duration_ms", "started_at"]
    list_filter = ["kind", "outcome"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
