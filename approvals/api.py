"""The integration API v1 (../shared/CONTRACT.md). Views only translate; services decide."""

from __future__ import annotations

from datetime import timezone as dt_timezone

import django_filters
from django.core.exceptions import ValidationError
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import generics, pagination, status
from rest_framework import serializers as drf_serializers
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from approvals import execution, info_requests, services
from approvals import audit, masking
from approvals.api_errors import error_response
from approvals.models import Proposal
from approvals.serializers import (
    ConnectorSerializer, DecisionInputSerializer, InfoAnswerSerializer, KillSwitchInputSerializer, OutcomeInputSerializer,
    ProposalInputSerializer, ProposalSerializer,
)
from connectors.models import Connector
from policies.models import KillSwitch
from policies.services import engage_switch, release_switch


class InstantField(IsoDateTimeField):
    """An ISO 8601 time that exists in UTC: 0001-01-01T00:00+01:00 parses, but no database can hold it."""

    def to_python(self, value):
        instant = super().to_python(value)
        try:
            return instant.astimezone(dt_timezone.utc) if instant else instant
        except OverflowError:
            raise ValidationError("out of range: give a time between the years 1 and 9999 in UTC", code="invalid")


class InstantFilter(django_filters.IsoDateTimeFilter):
    field_class = InstantField


class ProposalFilter(django_filters.FilterSet):
    connector = django_filters.CharFilter(field_name="connector__slug")
    created_after = InstantFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Proposal
        fields = ["status", "agent", "connector", "action", "created_after"]


class NewestFirst(pagination.CursorPagination):
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


def _proposals():
    return Proposal.objects.select_related("connector").prefetch_related(
        "review_tasks__group", "review_tasks__reviews", "executions",
    )


class ProposalListCreate(generics.ListAPIView):
    serializer_class = ProposalSerializer
    filterset_class = ProposalFilter
    pagination_class = NewestFirst
    required_scopes = {"GET": "proposals:read", "POST": "proposals:write"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular reads the model without a request
            return Proposal.objects.none()
        return _proposals().filter(integration=self.request.auth.integration)

    @extend_schema(request=ProposalInputSerializer, responses={201: ProposalSerializer, 200: ProposalSerializer})
    def post(self, request):
        incoming = ProposalInputSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        try:
            proposal, created = services.submit_proposal(
                request.auth.integration, _plain(incoming.validated_data), connector=incoming.connector,
            )
        except services.IdempotencyConflict as exc:
            return error_response(status.HTTP_409_CONFLICT, "idempotency_key", str(exc))
        # A new proposal is answered as it was stored (its relations are cached by the submission),
        # a repeated one as it is now.
        body = ProposalSerializer(proposal if created else _proposals().get(pk=proposal.pk)).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


def _plain(validated: dict) -> dict:
    """Validated values as plain dicts, so the idempotency fingerprint compares meaning, not spelling."""
    data = dict(validated)
    data["target"] = dict(data["target"]) if data.get("target") else None
    data["evidence"] = [dict(item) for item in data.get("evidence", [])]
    return data


class ProposalDetail(generics.RetrieveAPIView):
    serializer_class = ProposalSerializer
    required_scopes = {"GET": "proposals:read"}

    def get_queryset(self):
        return _proposals().filter(integration=self.request.auth.integration)


class ProposalCancel(APIView):
    required_scopes = {"POST": "proposals:write"}

    @extend_schema(request=None, responses={200: ProposalSerializer})
    def post(self, request, pk):
        try:
            proposal = services.cancel_proposal(pk, request.auth.integration, request.data.get("reason", ""))
        except Proposal.DoesNotExist:
            return error_response(status.HTTP_404_NOT_FOUND, "detail", "no such proposal of this integration")
        except services.NotReviewable as exc:
            return error_response(status.HTTP_409_CONFLICT, "status", str(exc))
        return Response(ProposalSerializer(_proposals().get(pk=proposal.pk)).data)


class ProposalInfo(APIView):
    """The submitting agent answers a reviewer's question (CONTRACT.md, 'Answer a question')."""

    required_scopes = {"POST": "proposals:write"}

    @extend_schema(request=InfoAnswerSerializer, responses={200: ProposalSerializer})
    def post(self, request, pk):
        incoming = InfoAnswerSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        try:
            info_requests.answer_info(
                pk, request.auth.integration, data["answer"], rationale=data.get("rationale"),
                evidence=[dict(item) for item in data.get("evidence", [])], changes=data.get("changes"),
            )
        except Proposal.DoesNotExist:
            return error_response(status.HTTP_404_NOT_FOUND, "detail", "no such proposal of this integration")
        except services.NotReviewable as exc:
            return error_response(status.HTTP_409_CONFLICT, "status", str(exc))
        return Response(ProposalSerializer(_proposals().get(pk=pk)).data)


class ProposalOutcome(APIView):
    """The submitting integration reports how its own execution of an approved action went: once per approval."""

    required_scopes = {"POST": "proposals:write"}

    @extend_schema(request=OutcomeInputSerializer, responses={200: ProposalSerializer})
    def post(self, request, pk):
        incoming = OutcomeInputSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        try:
            execution.report_outcome(pk, request.auth.integration, ok=data["ok"], result=data["result"], error=data["error"])
        except Proposal.DoesNotExist:
            return error_response(status.HTTP_404_NOT_FOUND, "detail", "no such proposal of this integration")
        except execution.OutcomeConflict as exc:
            return error_response(status.HTTP_409_CONFLICT, "status", str(exc))
        return Response(ProposalSerializer(_proposals().get(pk=pk)).data)


class ProposalDecision(APIView):
    """A reviewer's decision made outside the admin; the key must act for a user of the right group."""

    required_scopes = {"POST": "decisions:write"}

    @extend_schema(request=DecisionInputSerializer, responses={200: ProposalSerializer})
    def post(self, request, pk):
        incoming = DecisionInputSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        integration = request.auth.integration
        if integration.acts_for is None:
            return error_response(status.HTTP_403_FORBIDDEN, "detail", "this key does not act for a reviewer")
        if not Proposal.objects.filter(pk=pk).exists():
            return error_response(status.HTTP_404_NOT_FOUND, "detail", "no such proposal")
        data = incoming.validated_data
        try:
            services.record_verdict(
                pk, integration.acts_for, data["verdict"], data["reason"], changes=data.get("changes"),
                via="api", integration=integration, category=data["category"],
            )
        except services.NotReviewable as exc:
            return error_response(status.HTTP_409_CONFLICT, "status", str(exc))
        return Response(ProposalSerializer(_proposals().get(pk=pk)).data)


class ConnectorList(generics.ListAPIView):
    serializer_class = ConnectorSerializer
    pagination_class = None
    required_scopes = {}

    def get_queryset(self):
        return Connector.objects.filter(enabled=True)


class KillSwitchChange(APIView):
    required_scopes = {"POST": "killswitch:write"}

    @extend_schema(request=KillSwitchInputSerializer, responses={201: None, 200: None})
    def post(self, request):
        incoming = KillSwitchInputSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        user = request.auth.integration.acts_for
        reason = f"{data['reason']} (via API key of {request.auth.integration.name})"
        if data["engaged"]:
            switch = engage_switch(scope=data["scope"], value=data["value"], mode=data["mode"], reason=reason, user=user)
            return Response(_switch(switch), status=status.HTTP_201_CREATED)
        engaged = KillSwitch.objects.filter(engaged=True, scope=data["scope"], value=data["value"], mode=data["mode"])
        released = [release_switch(s, reason=reason, user=user) for s in engaged]
        return Response({"released": [_switch(s) for s in released]})


def _switch(switch: KillSwitch) -> dict:
    return {"id": switch.pk, "scope": switch.scope, "value": switch.value, "mode": switch.mode,
            "engaged": switch.engaged, "reason": switch.reason, "changed_at": switch.changed_at}


def _audit_rows_schema():
    """The audit row for the OpenAPI document (the rows themselves are built in approvals.audit)."""
    change = inline_serializer("AuditChange", {
        "field": drf_serializers.CharField(), "old": drf_serializers.JSONField(allow_null=True),
        "new": drf_serializers.JSONField(allow_null=True),
    }, many=True)
    return inline_serializer("AuditRow", {
        "object": drf_serializers.CharField(), "id": drf_serializers.JSONField(help_text="the object's primary key"),
        "history_id": drf_serializers.IntegerField(allow_null=True, help_text="null for objects without history"),
        "at": drf_serializers.DateTimeField(),
        "user": drf_serializers.CharField(allow_null=True), "reason": drf_serializers.CharField(allow_null=True),
        "type": drf_serializers.ChoiceField(["+", "~", "-"]),
        "rule": drf_serializers.CharField(allow_null=True, help_text="the rule that decided the proposal concerned"),
        "changes": change,
    }, many=True)


class AuditTrail(APIView):
    """Every governed object's history, field by field, oldest first (approvals.audit: the kinds and fields).

    Across all integrations: `audit:read` is an auditor's scope. Forward-only cursor pages:
    follow `next` until it is null.
    """

    required_scopes = {"GET": "audit:read"}
    page_size, max_page_size = 100, 500

    @extend_schema(
        parameters=[
            OpenApiParameter("since", OpenApiTypes.DATETIME, description="inclusive; ISO 8601, UTC if no offset"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, description="exclusive"),
            OpenApiParameter("object", OpenApiTypes.STR, description="proposal, matrix, connector, killswitch, integration (comma-separated)"),
            OpenApiParameter("cursor", OpenApiTypes.STR), OpenApiParameter("page_size", OpenApiTypes.INT),
        ],
        responses={200: inline_serializer("AuditPage", {"next": drf_serializers.URLField(allow_null=True),
                                                         "results": _audit_rows_schema()})},
    )
    def get(self, request):
        params = request.query_params
        try:
            # An integration acting for a person reads as that person may (as in the admin); one acting for
            # nobody reads what its audit:read scope grants.
            person = request.user if request.user.is_authenticated else None
            query = audit.parse_query(params.get("since"), params.get("until"), params.get("object"),
                                      mask_sensitive=person is not None and not masking.may_see(person))
            after = audit.decode_cursor(params["cursor"]) if params.get("cursor") else None
        except audit.InvalidQuery as exc:
            return Response({"errors": exc.errors, "detail": str(exc)}, status=status.HTTP_400_BAD_REQUEST)
        size = self._page_size(params.get("page_size"))
        page = list(audit.audit_rows(query, after=after, limit=size + 1))
        next_url = None
        if len(page) > size:
            page = page[:size]
            next_url = replace_query_param(request.build_absolute_uri(), "cursor", audit.encode_cursor(page[-1][0]))
        return Response({"next": next_url, "results": [row for _, row in page]})

    def _page_size(self, raw: str | None) -> int:
        """As DRF's paginators do: a bad or missing value means the default, a big one the maximum."""
        try:
            return max(1, min(int(raw), self.max_page_size))
        except (TypeError, ValueError):
            return self.page_size
