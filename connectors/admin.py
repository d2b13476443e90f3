"""Connector set-up for operators (credentials show as references, never values) and execution records.

Rollback batches act on proposals, so their admin lives in `approvals.admin_rollbacks`."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils.html import format_html_join

from connectors.models import Connector, Execution, SandboxRecord
from connectors.services import (
    EDITABLE_FIELDS, ConnectorError, check_health, create_connector, refresh_mcp_tools, update_connector,
)
from hitlgov.governed_admin import EvidenceAdmin, GovernedAdmin


class ConnectorForm(forms.ModelForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 80}),
                             help_text="Why this change: kept in the connector's history")

    class Meta:
        model = Connector
        fields = sorted(EDITABLE_FIELDS)


@admin.register(Connector)
class ConnectorAdmin(GovernedAdmin):
    """Every save goes to connectors.services with the reason given; connectors are disabled, never deleted."""

    form = ConnectorForm
    list_display = ["slug", "name", "kind", "enabled", "dry_run", "health_ok", "health_checked_at"]
    list_filter = ["kind", "enabled", "dry_run"]
    readonly_fields = ["credential_references", "health_ok", "health_detail", "health_checked_at"]
    actions = ["run_health_check", "refresh_tools"]

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        writable = self.has_change_permission(request, obj) if obj else self.has_add_permission(request)
        return fields if writable else [name for name in fields if name != "reason"]

    def has_delete_permission(self, request, obj=None):
        return False  # proposals and executions point at it: set enabled off instead

    def save_model(self, request, obj, form, change):
        names = form.changed_data if change else form.cleaned_data
        fields = {name: form.cleaned_data[name] for name in names if name in EDITABLE_FIELDS}
        reason = form.cleaned_data["reason"]
        saved = (update_connector(obj.pk, request.user, fields, reason) if change
                 else create_connector(request.user, fields, reason))
        obj.pk = saved.pk

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        field = super().formfield_for_dbfield(db_field, request, **kwargs)
        if db_field.name == "credentials":
            field.help_text = (
                f'Secret name to reference, e.g. {{"access_token": "env:{settings.CREDENTIAL_ENV_PREFIX}SF_TOKEN"}} '
                f'(variables starting with {settings.CREDENTIAL_ENV_PREFIX}) or "file:NAME" '
                f"(files in {settings.CREDENTIAL_FILE_DIR})"
            )
        return field

    @admin.display(description="credentials in use")
    def credential_references(self, connector: Connector) -> str:
        refs = sorted((connector.credentials or {}).items())
        return format_html_join("", "<div>{}: {}</div>", ((name, ref) for name, ref in refs)) or "none"

    @admin.action(description="Check health now")
    def run_health_check(self, request, queryset):
        for connector in queryset:
            health = check_health(connector, user=request.user)
            level = messages.SUCCESS if health.ok else messages.ERROR
            messages.add_message(request, level, f"{connector.slug}: {'healthy' if health.ok else 'unhealthy'} {health.detail}")


    @admin.action(description="Refresh tools from the upstream MCP server")
    def refresh_tools(self, request, queryset):
        for connector in queryset:
            try:
                saved = refresh_mcp_tools(connector.pk, request.user)
            except (ConnectorError, ValidationError, PermissionDenied, ValueError) as exc:
                messages.error(request, f"{connector.slug}: {exc}")
                continue
            messages.success(request, f"{connector.slug}: {len(saved.config['tools'])} tools: "
                                      f"{', '.join(sorted(saved.config['tools']))}")


@admin.register(SandboxRecord)
class SandboxRecordAdmin(GovernedAdmin):
    list_display = ["__str__", "type", "record_id", "updated_at"]
    list_filter = ["connector", "type"]
    search_fields = ["record_id"]


@admin.register(Execution)
class ExecutionAdmin(EvidenceAdmin):
    list_display = ["proposal", "kind", "attempt", "outcome", "duration_ms", "started_at"]
    list_filter = ["kind", "outcome"]
