from django.contrib import admin
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from approvals import mcp_http

admin.site.site_header = "HITL Gov"
admin.site.site_title = "HITL Gov"
admin.site.index_title = "Governance of AI actions"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("approvals.api_urls")),
    re_path(r"^mcp/?$", mcp_http.endpoint, name="mcp"),  # the MCP gateway (Streamable HTTP), docs/mcp.md
]
