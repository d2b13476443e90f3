"""Where governance boards edit, check, compare, simulate and publish approval matrices, and work switches.

Every button calls a service function (policies.services, matrix_io, simulation); the admin
only translates requests and shows results.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django_fsm import TransitionNotAllowed

from hitlgov.governed_admin import GovernedAdmin, GovernedRecordAdmin
from policies import matrix_io, services, simulation
from policies.admin_forms import RuleForm, TestCasesField, facts_text
from policies.matrices import rule_spec, to_spec
from policies.matrix_text import sentence
from policies.matrix_diff import compare
from policies.models import ApprovalMatrix, Budget, CircuitBreaker, KillSwitch, MatrixStatus, ReviewTier, Rule, SimulationRun


class DraftOnly:
    """Published and retired versions are frozen: their rows are read-only.

    For inlines Django passes the parent (the matrix, or the rule whose tiers these are),
    for the Rule and ApprovalMatrix pages the object itself; both lead to the matrix.
    """

    def _editable(self, obj) -> bool:
        matrix = obj if isinstance(obj, ApprovalMatrix) else getattr(obj, "matrix", None)
        return matrix is None or matrix.is_editable

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._editable(obj)

    def has_add_permission(self, request, obj=None):
        # Inlines are asked with the parent object; model admins with the request alone.
        allowed = super().has_add_permission(request, obj) if self._is_inline else super().has_add_permission(request)
        return allowed and self._editable(obj)

    @property
    def _is_inline(self) -> bool:
        return isinstance(self, admin.options.InlineModelAdmin)

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._editable(obj)


def save_draft_formset(request, formset, reason: str, prepare=None) -> None:
    """An inline of a draft, saved row by row through policies.services (which refuses frozen versions)."""
    rows = formset.save(commit=False)
    for row in formset.deleted_objects:
        services.delete_draft_row(row, request.user, reason)
    for row in rows:
        if prepare is not None:
            prepare(row)
        services.save_draft_row(row, request.user, reason)
    formset.save_m2m()


def _edit_reason(model, change: bool) -> str:
    return f"{model._meta.verbose_name_plural} {'edited' if change else 'added'} in the admin"


@admin.display(description="reads as")
def reads_as(rule: Rule) -> str:
    """The rule as a sentence, tiers included ("refund of 1,000 USD or more -> finance, 2 approvals, ...")."""
    return sentence(rule_spec(rule)) if rule.pk else "-"


class RuleInline(DraftOnly, admin.TabularInline):
    """One table of rules as sentences; a rule's conditions and tiers are edited on its own page."""

    model = Rule
    extra = 0
    fields = ["position", "name", "reads_as", "outcome"]
    readonly_fields = ["reads_as"]
    show_change_link = True
    verbose_name_plural = "rules (the strictest matching rule decides; open a rule to change its conditions and tiers)"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("tiers__group", "tiers__escalation_group")

    reads_as = staticmethod(reads_as)


class MatrixForm(forms.ModelForm):
    tests = TestCasesField(required=False, help_text="Each case: a proposal's facts and the outcome this version must give it")

    class Meta:
        model = ApprovalMatrix
        fields = "__all__"


class DefaultTierInline(DraftOnly, admin.TabularInline):
    model = ReviewTier
    extra = 0
    verbose_name_plural = "default review tiers (for actions no rule matches)"
    fields = ["position", "group", "required", "mode", "sla_minutes", "escalation_group", "bulk_allowed", "remind_at",
              "signed_links"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(rule__isnull=True)


class BudgetInline(DraftOnly, admin.TabularInline):
    model = Budget
    extra = 0


class ImportForm(forms.Form):
    file = forms.FileField(help_text="A matrix in YAML, as `export_matrix` or the Export action writes it")
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Stored with the draft")


def _action_error(exc: Exception, matrix: ApprovalMatrix) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(exc.messages)
    if isinstance(exc, TransitionNotAllowed):
        return f"it is {matrix.status}"
    return str(exc)


@admin.register(ApprovalMatrix)
class ApprovalMatrixAdmin(DraftOnly, GovernedAdmin):
    list_display = ["version", "name", "status", "author", "submitted_by", "published_by", "published_at"]
    list_filter = ["status"]
    readonly_fields = ["version", "status", "author", "submitted_by", "published_by", "published_at"]
    inlines = [DefaultTierInline, RuleInline, BudgetInline]
    form = MatrixForm
    actions = ["submit", "publish", "new_draft", "export_yaml", "compare_with_live", "simulate_last_30_days"]

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is not None and not obj.is_editable:  # a frozen version shows its tests as a table, not JSON
            return [("tests_table" if name == "tests" else name) for name in fields if name != "tests_table"]
        return fields

    def get_readonly_fields(self, request, obj=None):
        extra = ["tests_table"] if obj is not None and not obj.is_editable else []
        return [*super().get_readonly_fields(request, obj), *extra]

    @admin.display(description="embedded tests")
    def tests_table(self, matrix: ApprovalMatrix):
        rows = format_html_join("", "<tr><td>{}</td><td><pre>{}</pre></td><td>{}</td><td>{}</td></tr>", (
            (case.get("name", ""), facts_text(case.get("facts") or {}), case.get("expect", ""),
             ", ".join(case.get("expect_rules") or [])) for case in matrix.tests or []))
        return format_html('<table id="test-cases"><thead><tr><th>test</th><th>facts</th><th>expected outcome</th>'
                           '<th>expected rules</th></tr></thead><tbody>{}</tbody></table>', rows) if matrix.tests else "none"
    change_form_template = "admin/policies/approvalmatrix/change_form.html"
    change_list_template = "admin/policies/approvalmatrix/change_list.html"

    def has_change_permission(self, request, obj=None):
        return admin.ModelAdmin.has_change_permission(self, request, obj) and self._editable(obj)

    def save_model(self, request, obj, form, change):
        names = form.changed_data if change else form.cleaned_data
        fields = {name: form.cleaned_data[name] for name in names if name in services.DRAFT_FIELDS}
        if not change:
            draft = services.create_draft(request.user, fields)
            obj.pk, obj.version, obj.author = draft.pk, draft.version, draft.author
        elif fields:
            services.update_draft(obj.pk, request.user, fields, f"edited in the admin: {', '.join(sorted(fields))}")

    def save_formset(self, request, form, formset, change):
        save_draft_formset(request, formset, _edit_reason(formset.model, change))

    def delete_model(self, request, obj):
        services.delete_draft(obj.pk, request.user, "deleted in the admin")

    def delete_queryset(self, request, queryset):
        for matrix in queryset:
            self.delete_model(request, matrix)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("import/", view(self.import_view), name="policies_approvalmatrix_import"),
            path("<int:pk>/export/", view(self.export_view), name="policies_approvalmatrix_export"),
            path("<int:pk>/compare/", view(self.compare_view), name="policies_approvalmatrix_compare"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        matrix = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if matrix is not None:
            spec = to_spec(matrix)
            report = matrix_io.check_spec(spec)
            context.update(
                check=report,
                check_errors=[matrix_io.locate(spec, error) for error in report.errors],
                live=ApprovalMatrix.objects.filter(status=MatrixStatus.PUBLISHED).exclude(pk=matrix.pk).first(),
            )
        return super().change_view(request, object_id, form_url, context)

    # ---- lifecycle actions

    def _each(self, request, queryset, operation, done) -> None:
        for matrix in queryset:
            try:
                with transaction.atomic():
                    operation(matrix, request.user)
            except (ValidationError, PermissionDenied, TransitionNotAllowed) as exc:
                messages.error(request, f"v{matrix.version} not {done[0]}: {_action_error(exc, matrix)}")
            else:
                messages.success(request, f"v{matrix.version} {done[1]}")

    @admin.action(description="Submit for publication")
    def submit(self, request, queryset):
        self._each(request, queryset, services.submit_matrix, (
            "submitted", "submitted: it is valid and passes its tests. A board member other than you must now publish it.",
        ))

    @admin.action(description="Publish (a board member other than the author)")
    def publish(self, request, queryset):
        if queryset.count() > 1:
            messages.error(request, "Publish one version at a time: only one can be live.")
            return
        self._each(request, queryset, services.publish_matrix, (
            "published", "published: it decides every new proposal from now on; the previous live version is retired.",
        ))

    @admin.action(description="Copy into a new draft")
    def new_draft(self, request, queryset):
        for matrix in queryset:
            draft = services.new_draft(matrix, request.user, notes=f"copy of v{matrix.version}")
            url = reverse("admin:policies_approvalmatrix_change", args=[draft.pk])
            messages.success(request, format_html('v{} copied into <a href="{}">draft v{}</a>; edit it there.',
                                                   matrix.version, url, draft.version))

    # ---- matrices as code

    @admin.action(description="Export as YAML")
    def export_yaml(self, request, queryset):
        if queryset.count() != 1:
            messages.error(request, "Select exactly one version to export.")
            return None
        return self.export_view(request, queryset.get().pk)

    def export_view(self, request, pk):
        matrix = get_object_or_404(ApprovalMatrix, pk=pk)
        if not self.has_view_or_change_permission(request, matrix):
            raise PermissionDenied
        response = HttpResponse(matrix_io.export_yaml(matrix), content_type="application/yaml; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="matrix-v{matrix.version}.yaml"'
        return response

    def import_view(self, request):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ImportForm(request.POST or None, request.FILES or None)
        errors: list[str] = []
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                text = upload.read().decode("utf-8")
                notes = form.cleaned_data["notes"] or f"imported from {upload.name}"
                matrix = matrix_io.import_yaml(text, request.user, notes=notes)
            except UnicodeDecodeError:
                errors = ["file: not UTF-8 text"]
            except matrix_io.MatrixImportError as exc:
                errors = [f"{e.path or 'file'}: {e.message}" for e in exc.errors]
            else:
                messages.success(request, f"{upload.name} imported as draft v{matrix.version}.")
                return HttpResponseRedirect(reverse("admin:policies_approvalmatrix_change", args=[matrix.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.opts, "form": form, "errors": errors,
                   "title": "Import a matrix from YAML"}
        return TemplateResponse(request, "admin/policies/approvalmatrix/import.html", context)

    # ---- comparing and simulating

    @admin.action(description="Compare with the live version")
    def compare_with_live(self, request, queryset):
        if queryset.count() != 1:
            messages.error(request, "Select exactly one version to compare with the live one.")
            return None
        return self.compare_view(request, queryset.get().pk)

    def compare_view(self, request, pk):
        matrix = get_object_or_404(ApprovalMatrix, pk=pk)
        if not self.has_view_or_change_permission(request, matrix):
            raise PermissionDenied
        live = ApprovalMatrix.objects.filter(status=MatrixStatus.PUBLISHED).first()
        if live is None:
            messages.error(request, "No version is live: there is nothing to compare with.")
            return HttpResponseRedirect(reverse("admin:policies_approvalmatrix_changelist"))
        rows = compare(to_spec(live), to_spec(matrix))
        context = {**self.admin_site.each_context(request), "opts": self.opts, "matrix": matrix, "live": live,
                   "rows": rows, "title": f"v{matrix.version} compared with the live v{live.version}"}
        return TemplateResponse(request, "admin/policies/approvalmatrix/compare.html", context)

    @admin.action(description="Simulate against the last 30 days")
    def simulate_last_30_days(self, request, queryset):
        for matrix in queryset:
            run = simulation.last_days(matrix, request.user, days=30)
            url = reverse("admin:policies_simulationrun_change", args=[run.pk])
            messages.success(request, format_html(
                'Simulating v{} against the last 30 days: <a href="{}">follow run {}</a>.', matrix.version, url, run.pk))


class RuleTierInline(DraftOnly, admin.TabularInline):
    model = ReviewTier
    extra = 0
    fields = ["position", "group", "required", "mode", "sla_minutes", "escalation_group", "bulk_allowed", "remind_at",
              "signed_links"]


@admin.register(Rule)
class RuleAdmin(DraftOnly, GovernedAdmin):
    list_display = ["name", "matrix", "position", reads_as]
    list_filter = ["matrix", "outcome"]
    inlines = [RuleTierInline]
    form = RuleForm
    fieldsets = [
        (None, {"fields": ["matrix", "position", "name", "description", "reads_as", "outcome"]}),
        ("Which proposals (leave empty for any)", {"fields": ["connectors", "actions", "agents", "other_agents", "target_types"]}),
        ("How much, how sure, how visible", {"fields": ["currency", "amount_min", "amount_max", "confidence_min",
                                                        "confidence_max", "impacts", "fields_any"]}),
        ("Circumstances", {"fields": ["touches_sensitive", "missing_facts", "amount_mismatch", "override_rate_min",
                                      "budget_exceeded"]}),
    ]

    def get_fieldsets(self, request, obj=None):
        if obj is not None and not self.has_change_permission(request, obj):  # read-only: the typed-in box is moot
            return [(title, {"fields": [f for f in opts["fields"] if f != "other_agents"]}) for title, opts in self.fieldsets]
        return self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return ["matrix", "reads_as"] if obj is not None else ["reads_as"]  # a rule never moves to another version

    reads_as = staticmethod(reads_as)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "matrix":
            kwargs["queryset"] = ApprovalMatrix.objects.filter(status=MatrixStatus.DRAFT)  # only drafts take new rules
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        services.save_draft_row(obj, request.user, _edit_reason(Rule, change))

    def save_formset(self, request, form, formset, change):
        def on_the_rules_version(tier: ReviewTier) -> None:
            tier.matrix_id = form.instance.matrix_id

        save_draft_formset(request, formset, _edit_reason(ReviewTier, change), prepare=on_the_rules_version)

    def delete_model(self, request, obj):
        services.delete_draft_row(obj, request.user, "deleted in the admin")

    def delete_queryset(self, request, queryset):
        for rule in queryset:
            self.delete_model(request, rule)


class GlobalSwitchForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "cols": 60}), max_length=2000,
                             help_text="Recorded with the switch and shown to everyone it stops")


GLOBAL_SWITCHES = {  # url name: (service, what the page says once it is engaged)
    "stop-all": (services.stop_all_automation, "Automation stopped: every proposal now needs a person, and approved "
                                               "work that ran without one is held for review."),
    "block-all": (services.block_everything, "Everything is blocked: no new proposal is decided and no approved work starts."),
}


@admin.register(KillSwitch)
class KillSwitchAdmin(GovernedAdmin):
    list_display = ["__str__", "scope", "value", "mode", "engaged", "reason", "breaker", "changed_by", "changed_at"]
    list_filter = ["engaged", "scope", "mode"]
    fields = ["scope", "value", "mode", "reason"]
    actions = ["release"]
    change_list_template = "admin/policies/killswitch/change_list.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("global/<slug:which>/", view(self.global_switch_view), name="policies_killswitch_global"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        engaged = KillSwitch.objects.filter(engaged=True).select_related("changed_by", "breaker").order_by("-changed_at")
        context = {**(extra_context or {}), "engaged_switches": engaged, "global_form": GlobalSwitchForm(),
                   "can_engage": self.has_add_permission(request)}
        return super().changelist_view(request, context)

    def global_switch_view(self, request, which: str):
        """"Stop all automation" and "Block everything": one POST with a reason, through policies.services."""
        if which not in GLOBAL_SWITCHES:
            raise Http404(f"no switch {which}")
        if not self.has_add_permission(request):
            raise PermissionDenied("engaging a kill switch needs the policies.add_killswitch permission")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        operation, done = GLOBAL_SWITCHES[which]
        form = GlobalSwitchForm(request.POST)
        try:
            if not form.is_valid():
                raise ValidationError(form.errors["reason"])
            operation(request.user, form.cleaned_data["reason"])
        except ValidationError as exc:
            messages.error(request, f"Nothing engaged: a reason is required ({'; '.join(exc.messages)}).")
        except PermissionDenied as exc:
            messages.error(request, f"Nothing engaged: {exc}")
        else:
            messages.warning(request, done)
        return HttpResponseRedirect(reverse("admin:policies_killswitch_changelist"))

    def has_change_permission(self, request, obj=None):
        return False  # engage a new switch or release one; never edit history away

    def has_delete_permission(self, request, obj=None):
        return False  # a released switch stays on record

    def save_model(self, request, obj, form, change):
        engaged = services.engage_switch(scope=obj.scope, value=obj.value, mode=obj.mode, reason=obj.reason, user=request.user)
        obj.pk = engaged.pk

    @admin.action(description="Release selected switches", permissions=["release"])
    def release(self, request, queryset):
        for switch in queryset.filter(engaged=True):
            services.release_switch(switch, reason=f"released in the admin by {request.user.get_username()}", user=request.user)
        messages.success(request, "Released.")

    def has_release_permission(self, request) -> bool:
        return request.user.has_perm(services.RELEASE_PERMISSION)


@admin.register(CircuitBreaker)
class CircuitBreakerAdmin(GovernedAdmin):
    list_display = ["name", "agent_display", "connector", "window", "min_sample", "threshold", "mode", "enabled", "engaged_now"]
    list_filter = ["enabled", "mode"]
    fields = ["name", "agent", "connector", "window", "min_sample", "threshold", "mode", "enabled"]

    def has_delete_permission(self, request, obj=None):
        return False  # switch a breaker off (enabled) instead: its trips stay explained

    def save_model(self, request, obj, form, change):
        services.save_breaker(obj, request.user, _edit_reason(CircuitBreaker, change))

    @admin.display(description="agent")
    def agent_display(self, breaker: CircuitBreaker) -> str:
        return breaker.agent or "any (each on its own)"

    @admin.display(description="switches engaged")
    def engaged_now(self, breaker: CircuitBreaker) -> str:
        agents = list(breaker.switches.filter(engaged=True).values_list("value", flat=True))
        return ", ".join(agents) or "-"


@admin.register(SimulationRun)
class SimulationRunAdmin(GovernedRecordAdmin):
    list_display = ["__str__", "matrix", "status", "progress", "since", "until", "sample_size", "created_by", "created_at"]
    list_filter = ["status"]
    fields = ["matrix", "since", "until", "sample_size"]
    change_form_template = "admin/policies/simulationrun/change_form.html"

    def has_change_permission(self, request, obj=None):
        return False  # a run is a record of what was computed: start a new one instead

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def progress(self, run: SimulationRun) -> str:
        return f"{run.processed}/{run.total}" if run.total else "-"

    def save_model(self, request, obj, form, change):
        started = simulation.start_run(obj.matrix, request.user, since=obj.since, until=obj.until, sample=obj.sample_size)
        obj.pk = started.pk

    def response_add(self, request, obj, post_url_continue=None):
        messages.success(request, f"Simulation run {obj.pk} queued.")
        return HttpResponseRedirect(reverse("admin:policies_simulationrun_change", args=[obj.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if run is not None:
            context.update(run=run, result=run.result or None, percent=int(100 * run.processed / run.total) if run.total else 0,
                           moving=run.status in (SimulationRun.State.QUEUED, SimulationRun.State.RUNNING),
                           workload=_workload_rows(run.result) if run.result else [], outcome_rows=_outcome_rows(run.result))
        return super().change_view(request, object_id, form_url, context)


def _outcome_rows(result: dict) -> list[tuple[str, int, int, int]]:
    if not result:
        return []
    before, after = result["outcomes"]["before"], result["outcomes"]["after"]
    return [(o, before[o], after[o], after[o] - before[o]) for o in before]


def _workload_rows(result: dict) -> list[tuple[str, int, int, int]]:
    before, after = result["workload"]["before"], result["workload"]["after"]
    return [(g, before[g], after[g], after[g] - before[g]) for g in before]
