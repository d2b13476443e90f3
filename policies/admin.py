"""Where governance boards edit, check and publish approval matrices and work kill switches."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from simple_history.admin import SimpleHistoryAdmin

from policies import services
from policies.models import ApprovalMatrix, Budget, KillSwitch, ReviewTier, Rule


class DraftOnly:
    """Published and retired versions are frozen: their rows are read-only."""

    def _editable(self, obj) -> bool:
        matrix = obj if isinstance(obj, ApprovalMatrix) else getattr(obj, "matrix", None)
        return matrix is None or matrix.is_editable

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._editable(obj)

    def has_add_permission(self, request, obj=None):
        return super().has_add_permission(request, obj) and self._editable(obj)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._editable(obj)


class RuleInline(DraftOnly, admin.TabularInline):
    model = Rule
    extra = 0
    fields = ["position", "name", "outcome", "connectors", "actions", "agents", "currency", "amount_min", "amount_max",
              "confidence_min", "confidence_max", "impacts"]
    show_change_link = True


class DefaultTierInline(DraftOnly, admin.TabularInline):
    model = ReviewTier
    extra = 0
    verbose_name_plural = "default review tiers (for actions no rule matches)"
    fields = ["position", "group", "required", "mode", "sla_minutes", "escalation_group", "bulk_allowed"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(rule__isnull=True)


class BudgetInline(DraftOnly, admin.TabularInline):
    model = Budget
    extra = 0


@admin.register(ApprovalMatrix)
class ApprovalMatrixAdmin(DraftOnly, SimpleHistoryAdmin):
    list_display = ["version", "name", "status", "author", "published_by", "published_at"]
    list_filter = ["status"]
    readonly_fields = ["status", "submitted_by", "published_by", "published_at"]
    inlines = [DefaultTierInline, RuleInline, BudgetInline]
    actions = ["submit", "publish", "new_draft"]

    def has_change_permission(self, request, obj=None):
        return admin.ModelAdmin.has_change_permission(self, request, obj) and self._editable(obj)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.version = obj.version or services.next_version()
            obj.author = request.user
        super().save_model(request, obj, form, change)

    def _each(self, request, queryset, operation, done: str) -> None:
        for matrix in queryset:
            try:
                operation(matrix, request.user)
                messages.success(request, f"v{matrix.version} {done}.")
            except (ValidationError, PermissionDenied) as exc:
                text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                messages.error(request, f"v{matrix.version} not {done}: {text}")
            except Exception as exc:  # TransitionNotAllowed and friends: say what went wrong, keep going
                messages.error(request, f"v{matrix.version} not {done}: {exc}")

    @admin.action(description="Submit for publication")
    def submit(self, request, queryset):
        self._each(request, queryset, services.submit_matrix, "submitted")

    @admin.action(description="Publish (a board member other than the author)")
    def publish(self, request, queryset):
        self._each(request, queryset, services.publish_matrix, "published")

    @admin.action(description="Copy into a new draft")
    def new_draft(self, request, queryset):
        self._each(request, queryset, lambda m, user: services.new_draft(m, user, notes=f"copy of v{m.version}"), "copied")


class RuleTierInline(DraftOnly, admin.TabularInline):
    model = ReviewTier
    extra = 0
    fields = ["position", "group", "required", "mode", "sla_minutes", "escalation_group", "bulk_allowed"]

    def get_formset(self, request, obj=None, **kwargs):
        formset = super().get_formset(request, obj, **kwargs)
        formset.form.base_fields.pop("matrix", None)
        return formset


@admin.register(Rule)
class RuleAdmin(DraftOnly, SimpleHistoryAdmin):
    list_display = ["name", "matrix", "position", "outcome"]
    list_filter = ["matrix", "outcome"]
    inlines = [RuleTierInline]

    def save_formset(self, request, form, formset, change):
        for tier in formset.save(commit=False):
            tier.matrix = form.instance.matrix
            tier.save()
        for tier in formset.deleted_objects:
            tier.delete()


@admin.register(KillSwitch)
class KillSwitchAdmin(SimpleHistoryAdmin):
    list_display = ["__str__", "scope", "value", "mode", "engaged", "reason", "changed_by", "changed_at"]
    list_filter = ["engaged", "scope", "mode"]
    fields = ["scope", "value", "mode", "reason"]
    actions = ["release"]

    def has_change_permission(self, request, obj=None):
        return False  # engage a new switch or release one; never edit history away

    def save_model(self, request, obj, form, change):
        engaged = services.engage_switch(scope=obj.scope, value=obj.value, mode=obj.mode, reason=obj.reason, user=request.user)
        obj.pk = engaged.pk

    @admin.action(description="Release selected switches")
    def release(self, request, queryset):
        for switch in queryset.filter(engaged=True):
            services.release_switch(switch, reason=f"released in the admin by {request.user.get_username()}", user=request.user)
        messages.success(request, "Released.")
