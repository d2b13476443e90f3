"""The admin base every governed model uses: history is evidence, never a way to write.

django-simple-history's `history_form_view` renders an editable form for an old version and
saves it on POST, checking only *view* permission and ignoring the admin's queryset; its
`history_view` falls back to historical rows for objects the queryset hides. Here both views
first find the object through `get_queryset(request)` (404 otherwise) and ask
`has_view_permission(request, obj)` (403 otherwise); the version page is a read-only table
and answers 405 to anything but GET. Every write goes through the apps' service functions.
"""

from __future__ import annotations

import json
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import reverse
from simple_history.admin import SimpleHistoryAdmin

READ_ONLY_METHODS = ("GET", "HEAD")


class GovernedMixin:
    """History pages only for objects this user's queryset holds and view permission allows."""

    def visible_object(self, request: HttpRequest, object_id: str):
        """The object as this user may see it: through the admin's own queryset and view permission."""
        try:
            obj = self.get_queryset(request).get(pk=unquote(object_id))
        except (self.model.DoesNotExist, ValidationError, ValueError, TypeError):  # a malformed id is no object either
            raise Http404(f"no {self.opts.verbose_name} {object_id} here") from None
        if not self.has_view_permission(request, obj):
            raise PermissionDenied
        return obj

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        # Django redirects to the index with "perhaps it was deleted"; an object this user may not
        # see must look exactly like one that does not exist, on every page.
        raise Http404(f"no {opts.verbose_name} {object_id} here")

    def history_view(self, request: HttpRequest, object_id: str, extra_context=None) -> HttpResponse:
        if request.method not in READ_ONLY_METHODS:
            return HttpResponseNotAllowed(READ_ONLY_METHODS)
        self.visible_object(request, object_id)
        return super().history_view(request, object_id, extra_context)


class GovernedRecordAdmin(GovernedMixin, admin.ModelAdmin):
    """For governed records without django-simple-history (deliveries, executions, batches, runs)."""


class EvidenceAdmin(GovernedRecordAdmin):
    """For records that are evidence (deliveries, executions, break-glass events): nobody adds, edits or deletes."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class GovernedAdmin(GovernedMixin, SimpleHistoryAdmin):
    """For governed models with django-simple-history: each version is shown read-only, never saved."""

    object_history_form_template = "admin/governed/history_version.html"

    def history_form_view(self, request: HttpRequest, object_id: str, version_id: str, extra_context=None) -> HttpResponse:
        """One historical version as a table of values: no form, nothing to submit."""
        if request.method not in READ_ONLY_METHODS:
            return HttpResponseNotAllowed(READ_ONLY_METHODS)
        obj = self.visible_object(request, object_id)
        history_model = getattr(self.model, self.opts.simple_history_manager_attribute).model
        try:
            version = get_object_or_404(history_model, **{self.opts.pk.attname: obj.pk, "history_id": int(version_id)})
        except ValueError:
            raise Http404("no such version") from None
        info = self.opts.app_label, self.opts.model_name
        context = {
            **self.admin_site.each_context(request),
            "title": f"{obj} as it was on {version.history_date:%Y-%m-%d %H:%M:%S}",
            "opts": self.opts,
            "original": obj,
            "version": version,
            "rows": self.history_rows(request, version),
            "change_url": reverse("admin:%s_%s_change" % info, args=[obj.pk]),
            "history_url": reverse("admin:%s_%s_history" % info, args=[obj.pk]),
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.object_history_form_template, context)

    def history_rows(self, request: HttpRequest, version) -> list[tuple[str, str]]:
        """The version's rows as this person may read them (a model's admin may mask values)."""
        return version_rows(version)

    def has_change_history_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # history is never edited, whoever asks

    def revert_disabled(self, request: HttpRequest, obj=None) -> bool:
        return True


def version_rows(version, mask=None) -> list[tuple[str, str]]:
    """(label, value as text) for each field a historical row tracked; secrets are never tracked.
    `mask(field name, value)` may replace a value before it is shown."""
    rows = []
    for field in version.tracked_fields:
        rows.append((str(field.verbose_name), _display(version, field, mask)))
    return rows


def _display(version, field, mask=None) -> str:
    value = getattr(version, field.attname)
    if mask is not None:
        value = mask(field.name, value)
    if value is None:
        return "-"
    if field.is_relation:
        try:
            return str(getattr(version, field.name))
        except ObjectDoesNotExist:
            return f"{value} (deleted)"
    if field.choices:
        return str(dict(field.flatchoices).get(value, value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, indent=2, sort_keys=True, default=str)
    return str(value)

