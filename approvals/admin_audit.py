"""Audit downloads in the admin: the audit trail (JSON Lines, CSV), the evidence pack (zip), feedback (JSON Lines).

For people who may read the decision log (`ledger.view_event`); linked from its admin page.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path
from django.utils import timezone

from approvals import audit, evidence, feedback


def download(request: HttpRequest, name: str) -> HttpResponse:
    if not request.user.has_perm("ledger.view_event"):
        raise PermissionDenied
    until = timezone.now()
    try:
        query = audit.parse_query(request.GET.get("since") or (until - timedelta(days=30)).isoformat(),
                                  request.GET.get("until") or until.isoformat(), request.GET.get("object"))
    except audit.InvalidQuery as exc:
        return JsonResponse({"errors": exc.errors, "detail": str(exc)}, status=400)
    if name == "evidence.zip":
        response = HttpResponse(evidence.zipped(evidence.build(query.since, query.until)), content_type="application/zip")
    elif name == "audit.csv":
        response = StreamingHttpResponse(audit.csv_text(row for _, row in audit.audit_rows(query)), content_type="text/csv")
    elif name == "audit.jsonl":
        response = StreamingHttpResponse(audit.jsonl_text(row for _, row in audit.audit_rows(query)),
                                         content_type="application/jsonl")
    elif name == "feedback.jsonl":
        response = StreamingHttpResponse(audit.jsonl_text(feedback.feedback_rows(query.since, query.until)),
                                         content_type="application/jsonl")
    else:
        raise Http404(f"no download {name}")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


urlpatterns = [
    path("admin/audit/<str:name>", admin.site.admin_view(download), name="audit-download"),
]
