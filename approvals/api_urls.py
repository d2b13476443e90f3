from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.permissions import AllowAny

from approvals import api

urlpatterns = [
    path("proposals/", api.ProposalListCreate.as_view(), name="proposal-list"),
    path("proposals/<uuid:pk>/", api.ProposalDetail.as_view(), name="proposal-detail"),
    path("proposals/<uuid:pk>/cancel/", api.ProposalCancel.as_view(), name="proposal-cancel"),
    path("proposals/<uuid:pk>/info/", api.ProposalInfo.as_view(), name="proposal-info"),
    path("proposals/<uuid:pk>/outcome/", api.ProposalOutcome.as_view(), name="proposal-outcome"),
    path("proposals/<uuid:pk>/decisions/", api.ProposalDecision.as_view(), name="proposal-decisions"),
    path("connectors/", api.ConnectorList.as_view(), name="connector-list"),
    path("killswitches/", api.KillSwitchChange.as_view(), name="killswitch-change"),
    path("audit/", api.AuditTrail.as_view(), name="audit-trail"),
    # The contract is public: anyone may read the schema and its docs page, no key needed.
    path("schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[AllowAny]), name="schema"),
    path("docs/", SpectacularSwaggerSplitView.as_view(
        url_name="schema", authentication_classes=[], permission_classes=[AllowAny]), name="api-docs"),
]
