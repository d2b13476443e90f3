from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "HITL Gov"
admin.site.site_title = "HITL Gov"
admin.site.index_title = "Governance of AI actions"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/v1/", include("approvals.api_urls")),
    path("notifications/", include("approvals.notification_urls")),
]
