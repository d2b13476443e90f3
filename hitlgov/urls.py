from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from approvals import mcp_http
from approvals.metrics import metrics
from hitlgov.health import healthz

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("", include("approvals.admin_audit")),  # admin/audit/<download>, before the admin's catch-all
    path("admin/", admin.site.urls),
    path("api/v1/", include("approvals.api_urls")),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("notifications/", include("approvals.notification_urls")),
    re_path(r"^mcp/?$", mcp_http.endpoint, name="mcp"),  # the MCP gateway (Streamable HTTP), docs/mcp.md
]
