from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from django.views.generic import RedirectView

from approvals.metrics import metrics
from hitlgov.health import healthz


@csrf_exempt
def mcp_endpoint(request: HttpRequest) -> HttpResponse:
    """The MCP gateway, imported on its first request: the MCP SDK and what it brings (pydantic,
    starlette, anyio) add about 34 MB to a web worker, which most workers never need."""
    from approvals import mcp_http

    return mcp_http.endpoint(request)


urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("", include("approvals.admin_audit")),  # admin/audit/<download>, before the admin's catch-all
    path("admin/", admin.site.urls),
    path("api/v1/", include("approvals.api_urls")),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("notifications/", include("approvals.notification_urls")),
    re_path(r"^mcp/?$", mcp_endpoint, name="mcp"),  # the MCP gateway (Streamable HTTP), docs/mcp.md
]
