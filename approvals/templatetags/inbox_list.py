"""The inbox's list rows, written as the admin's own `result_list` writes them, a column's lookup resolved once a
page instead of once a cell: the stock renderer looks each of 500 cells up afresh (a model field lookup that
fails, then the ModelAdmin's attribute, the empty value, the link test), a quarter of the page's CPU time."""

from __future__ import annotations

import datetime
from collections.abc import Callable

from django import template
from django.contrib.admin.templatetags import admin_list
from django.contrib.admin.templatetags.base import InclusionAdminNode
from django.contrib.admin.utils import display_for_field, display_for_value
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.utils.html import conditional_escape
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

Cell = Callable[[models.Model], str]


def _field_cell(name: str, field: models.Field, classes: str, empty: str) -> Cell:
    if isinstance(field, (models.DateField, models.TimeField)):
        classes += " nowrap"
    opening = f'<td class="{classes}">'

    def cell(row: models.Model) -> str:
        value = getattr(row, name)
        if isinstance(value, str) and value.strip() == "":
            value = ""
        return opening + conditional_escape(display_for_field(value, field, empty)) + "</td>"
    return cell


def _callable_cell(function: Callable, classes: str, empty: str) -> Cell:
    empty = getattr(function, "empty_value_display", empty)
    boolean = getattr(function, "boolean", False)

    def cell(row: models.Model) -> str:
        value = function(row)
        if isinstance(value, str) and value.strip() == "":
            value = ""
        nowrap = " nowrap" if isinstance(value, (datetime.date, datetime.time)) else ""
        return f'<td class="{classes}{nowrap}">' + conditional_escape(display_for_value(value, empty, boolean)) + "</td>"
    return cell


def row_writer(cl) -> Callable[[models.Model], SafeString] | None:
    """A function from a row to its cells as admin_list.items_for_result writes them, or None where the list is
    not the kind written here (links to the change page, editable fields, columns that follow relations)."""
    if cl.formset or cl.list_display_links is not None:
        return None
    empty = cl.model_admin.get_empty_value_display()
    cells: list[Cell] = []
    for index, name in enumerate(cl.list_display):
        classes = "field-" + admin_list._coerce_field_name(name, index)
        if isinstance(name, str):
            try:
                field = cl.lookup_opts.get_field(name)
            except FieldDoesNotExist:
                field = None
            if field is not None:
                if field.is_relation or field.auto_created:
                    return None
                cells.append(_field_cell(name, field, classes, empty))
                continue
            if name == "__str__" or not callable(getattr(cl.model_admin, name, None)):
                return None  # a model attribute or property: the admin's own lookup
            function = getattr(cl.model_admin, name)
        else:
            function = name
        cells.append(_callable_cell(function, "action-checkbox" if name == "action_checkbox" else classes, empty))
    return lambda row: mark_safe("".join(cell(row) for cell in cells))


def inbox_result_list(cl) -> dict:
    """admin_list.result_list's context, each row's cells written in one string."""
    write = row_writer(cl)
    if write is None:
        return admin_list.result_list(cl)
    headers = list(admin_list.result_headers(cl))
    return {
        "cl": cl,
        "result_hidden_fields": [],  # a list without editable fields has none
        "result_headers": headers,
        "num_sorted_fields": sum(1 for header in headers if header["sortable"] and header["sorted"]),
        "results": [admin_list.ResultList(None, [write(row)]) for row in cl.result_list],
    }


@register.tag(name="inbox_result_list")
def inbox_result_list_tag(parser, token):
    return InclusionAdminNode(parser, token, func=inbox_result_list, template_name="change_list_results.html",
                              takes_context=False)
