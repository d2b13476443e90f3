"""Connector set-up for operators (credentials show as references, never values) and rollback batches."""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from simple_history.admin import SimpleHistoryAdmin

from approvals.operations import is_operator
from connectors import rollback
from connectors.models import Connector, Execution, RollbackBatch, SandboxRecord
from connectors.services import check_health


@admin.register(Connector)
class ConnectorAdmin(SimpleHistoryAdmin):
    list_display = ["slug", "name", "kind", "enabled", "dry_run", "health_ok", "health_checked_at"]
    list_filter = ["kind", "enabled", "dry_run"]
    readonly_fields = ["credential_references", "health_ok", "health_detail", "health_checked_at"]
    actions = ["run_health_check"]

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


class RollbackBatchForm(forms.Form):
    """What to roll back: every executed proposal matching all the filters given."""

    agent = forms.CharField(required=False, max_length=100)
    connector = forms.ModelChoiceField(Connector.objects.all(), required=False, to_field_name="slug")
    executed_from = forms.DateTimeField(required=False, help_text="Writes that finished at or after (YYYY-MM-DD HH:MM)")
    executed_until = forms.DateTimeField(required=False, help_text="Writes that finished at or before")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}))


@admin.register(RollbackBatch)
class RollbackBatchAdmin(admin.ModelAdmin):
    """Operators start batches here (or with "Roll back selected" on proposals) and watch them run."""

    list_display = ["__str__", "selection", "status", "progress", "manual_count", "requested_by", "created_at"]
    list_filter = ["status"]
    readonly_fields = ["selection", "reason", "requested_by", "status", "progress", "manual_list",
                       "created_at", "started_at", "finished_at"]
    fields = readonly_fields
    change_form_template = "admin/connectors/rollbackbatch/change_form.html"

    def has_module_permission(self, request):
        return is_operator(request.user)

    def has_view_permission(self, request, obj=None):
        return is_operator(request.user)

    def has_add_permission(self, request):
        return is_operator(request.user)

    def has_change_permission(self, request, obj=None):
        return False  # a batch is an audit record: it changes only by running

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def progress(self, batch: RollbackBatch) -> str:
        return f"{batch.done}/{batch.total} done: {batch.rolled_back} rolled back, {batch.skipped} skipped"

    @admin.display(description="manual")
    def manual_count(self, batch: RollbackBatch) -> int:
        return len(batch.manual)

    @admin.display(description="needs manual handling")
    def manual_list(self, batch: RollbackBatch) -> str:
        rows = (
            (reverse("admin:approvals_proposal_change", args=[item["proposal"]]), item["proposal"],
             ", ".join(item.get("fields", [])) or "-", item.get("error", ""))
            for item in batch.manual
        )
        body = format_html_join("", "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td></tr>", rows)
        if not batch.manual:
            return "nothing"
        return format_html('<table id="manual-list"><thead><tr><th>Proposal</th><th>Fields</th><th>Why</th></tr></thead>'
                           "<tbody>{}</tbody></table>", body)

    def add_view(self, request, form_url="", extra_context=None):
        """Start a batch from filters; the work happens in a Celery task, this page only asks."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = RollbackBatchForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                batch = rollback.start_batch(request.user, **form.cleaned_data)
            except ValidationError as exc:
                for name, errors in exc.message_dict.items():
                    form.add_error(name if name in form.fields else None, errors)
            else:
                messages.success(request, f"Rollback batch #{batch.pk} queued: {batch.total} executed proposal(s).")
                return HttpResponseRedirect(reverse("admin:connectors_rollbackbatch_change", args=[batch.pk]))
        return render(request, "admin/connectors/rollbackbatch/start.html", {
            **self.admin_site.each_context(request), "form": form, "opts": self.model._meta,
            "title": "Roll back executed proposals",
        })
