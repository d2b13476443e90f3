"""Translate API JSON to and from the services; every rule of ../shared/CONTRACT.md is checked here."""

from __future__ import annotations

import copy
import math
from urllib.parse import urlparse

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from approvals.api_schema import NULLABLE_OBJECT
from approvals.models import Proposal
from connectors import outbound
from connectors.models import Connector
from connectors.services import adapter_capability, supported_actions
from hitlgov import raw_rows

IMPACTS = ["none", "low", "medium", "high"]
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}


class FieldsBuiltOnce:
    """A serializer whose fields are built once per class instead of once per instance.

    DRF deep-copies a serializer's declared fields for every instance, and a ModelSerializer builds
    its model fields from the model's metadata every time: a tenth of a submission's CPU (py-spy,
    issue 14), for the same fields each time. Here the class builds them once, as DRF does, and
    keeps them unbound; each instance gets its own copies, which DRF then binds to it. A plain
    field is copied one level deep: once bound it keeps nothing of a request, and what its copies
    share (validators, error messages, choices) is only read. A field holding another field or a
    serializer (a nested serializer, a list, a dict with a child) or a mutable default is
    deep-copied, as DRF copies every field.
    """

    def get_fields(self) -> dict[str, serializers.Field]:
        built = type(self).__dict__.get("_fields_built_once")
        if built is None:
            built = super().get_fields()
            type(self)._fields_built_once = built  # on this class only: a subclass builds its own
        return {name: _fresh_copy(field) for name, field in built.items()}


def _fresh_copy(field: serializers.Field) -> serializers.Field:
    shares_state = (isinstance(field, serializers.BaseSerializer) or hasattr(field, "child")
                    or hasattr(field, "child_relation") or isinstance(field.default, (dict, list, set)))
    return copy.deepcopy(field) if shares_state else copy.copy(field)


class FiniteFloatField(serializers.FloatField):
    """A float that is a real number: NaN slips past min/max checks (every comparison with it is false)."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            raise serializers.ValidationError("must be a finite number")
        return value


class TargetSerializer(FieldsBuiltOnce, serializers.Serializer):
    type = serializers.CharField(max_length=100)
    id = serializers.CharField(max_length=200)


class EvidenceSerializer(FieldsBuiltOnce, serializers.Serializer):
    title = serializers.CharField(max_length=300)
    url = serializers.URLField(max_length=1000, required=False, allow_blank=True)
    excerpt = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    kind = serializers.CharField(max_length=50, required=False, allow_blank=True)


class StrictSerializer(FieldsBuiltOnce, serializers.Serializer):
    """Input whose unknown fields are a 400 naming each, not silently dropped (a typo would lose data)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class ProposalInputSerializer(StrictSerializer):
    idempotency_key = serializers.CharField(min_length=1, max_length=200)
    agent = serializers.SlugField(max_length=100)
    connector = serializers.CharField(max_length=50)
    action = serializers.CharField(max_length=100)
    target = TargetSerializer(required=False, allow_null=True)
    changes = serializers.DictField(required=False, allow_empty=True)
    amount = serializers.DecimalField(max_digits=18, decimal_places=2, min_value=0, required=False, allow_null=True)
    currency = serializers.RegexField(r"^[A-Z]{3}$", required=False, allow_blank=True,
                                      error_messages={"invalid": "an ISO 4217 code such as USD"})
    confidence = FiniteFloatField(min_value=0, max_value=1)
    customer_impact = serializers.ChoiceField(IMPACTS, default="none")
    evidence = EvidenceSerializer(many=True, required=False)
    rationale = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    context = serializers.DictField(required=False)
    observed = serializers.DictField(required=False)  # the record's values as the agent read them (conflict check)
    callback_url = serializers.URLField(required=False, allow_blank=True, max_length=500)

    def validate_connector(self, slug: str) -> str:
        # Read once and kept: validate() and the submission use this row instead of reading it again.
        self.connector = raw_rows.first(Connector, "slug = %s AND enabled = %s", [slug, True])
        if self.connector is None:
            raise serializers.ValidationError(f"no enabled connector {slug!r}")
        return slug

    def validate_callback_url(self, url: str) -> str:
        parsed = urlparse(url)
        if url and not (parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in LOCAL_HOSTS)):
            raise serializers.ValidationError("must be https (http only on localhost)")
        if url:
            try:
                outbound.check_url(url)  # checked again, and pinned, at every delivery
            except outbound.OutboundRefused as exc:
                raise serializers.ValidationError(str(exc)) from None
        return url

    def validate(self, data):
        connector = self.connector
        action = data["action"]
        if action not in supported_actions(connector):
            raise serializers.ValidationError({"action": [f"connector {connector.slug} does not support {action!r}"]})
        capability = adapter_capability(connector, action)
        if capability in ("update", "delete") and not data.get("target"):
            raise serializers.ValidationError({"target": [f"{action} acts on an existing record: give its type and id"]})
        if capability not in ("read", "delete", "call") and not data.get("changes"):  # a tool may take no arguments
            raise serializers.ValidationError({"changes": [f"{action} writes: give the exact planned change"]})
        if data.get("amount") is not None and not data.get("currency"):
            raise serializers.ValidationError({"currency": ["required with amount"]})
        return data


class ProposalSerializer(FieldsBuiltOnce, serializers.ModelSerializer):
    """The proposal as integrations see it (CONTRACT.md, 'Read a proposal')."""

    connector = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    target = serializers.SerializerMethodField()
    decision = serializers.SerializerMethodField()
    review = serializers.SerializerMethodField()
    execution = serializers.SerializerMethodField()
    info_request = serializers.SerializerMethodField()

    class Meta:
        model = Proposal
        fields = [
            "id", "status", "status_reason", "idempotency_key", "agent", "connector", "action", "target", "changes",
            "amount", "currency", "confidence", "customer_impact", "preview", "decision", "review", "execution",
            "info_request", "expires_at", "created_at", "updated_at",
        ]

    @extend_schema_field(NULLABLE_OBJECT)
    def get_target(self, proposal: Proposal) -> dict | None:
        return {"type": proposal.target_type, "id": proposal.target_id} if proposal.target_id else None

    @extend_schema_field(NULLABLE_OBJECT)
    def get_decision(self, proposal: Proposal) -> dict | None:
        if not proposal.decision:
            return None
        keys = ("outcome", "matrix_version", "rule", "rules", "reasons", "switches", "trace_omitted", "max_age_minutes",
                "sampled")
        decision = {key: proposal.decision.get(key) for key in keys if key in proposal.decision}
        # A stored trace counts the rules the index skipped ({"skipped": n, ...}); older ones said trace_omitted.
        skipped = sum(entry.get("skipped", 0) for entry in proposal.decision.get("trace") or ())
        if skipped:
            decision["trace_omitted"] = skipped
        return decision

    @extend_schema_field(NULLABLE_OBJECT)
    def get_review(self, proposal: Proposal) -> dict | None:
        tasks = list(proposal.review_tasks.all())
        if not tasks:
            return None
        return {"tiers": [_tier(task) for task in tasks]}

    @extend_schema_field(NULLABLE_OBJECT)
    def get_info_request(self, proposal: Proposal) -> dict | None:
        """The reviewer's open question while the proposal waits for the agent (answer: POST .../info/)."""
        if proposal.status != "info_requested":
            return None
        return {"question": proposal.info_question, "asked_at": proposal.info_requested_at,
                "answer_by": proposal.expires_at}

    @extend_schema_field(NULLABLE_OBJECT)
    def get_execution(self, proposal: Proposal) -> dict | None:
        executions = list(proposal.executions.all())  # prefetched by the API's queryset
        if not executions:
            return None
        last = max(executions, key=lambda e: (e.started_at, e.id))
        return {"kind": last.kind, "attempt": last.attempt, "outcome": last.outcome, "error": last.error,
                "before": last.before, "after": last.after, "result": last.response,
                "started_at": last.started_at, "finished_at": last.finished_at}


def _tier(task) -> dict:
    approved = sum(1 for review in task.reviews.all() if review.verdict == "approve")
    return {"group": task.group.name, "required": task.required, "mode": task.mode, "approved": approved,
            "state": task.state, "due_at": task.due_at, "escalated": task.escalated_at is not None}


class DecisionInputSerializer(FieldsBuiltOnce, serializers.Serializer):
    verdict = serializers.ChoiceField(["approve", "reject"])
    reason = serializers.CharField(required=False, allow_blank=True, max_length=5000, default="")
    changes = serializers.DictField(required=False, allow_empty=False)
    category = serializers.CharField(required=False, allow_blank=True, max_length=50, default="",
                                     help_text="Exception category of a rejection or an edit (docs/audit.md lists the built-in ones)")


class InfoAnswerSerializer(StrictSerializer):
    """The agent's answer to a reviewer's question: text, and optionally new evidence, rationale or a revised change."""

    answer = serializers.CharField(max_length=5000)
    evidence = EvidenceSerializer(many=True, required=False)
    rationale = serializers.CharField(required=False, allow_blank=True, max_length=20000)
    changes = serializers.DictField(required=False, allow_empty=False)


class OutcomeInputSerializer(StrictSerializer):
    """What an integration that carried out an approved action itself reports (CONTRACT.md, outcome)."""

    ok = serializers.BooleanField()
    result = serializers.DictField(required=False, default=dict)
    error = serializers.CharField(required=False, allow_blank=True, default="", max_length=5000)


class KillSwitchInputSerializer(FieldsBuiltOnce, serializers.Serializer):
    scope = serializers.ChoiceField(["global", "connector", "action", "agent"])
    value = serializers.CharField(required=False, allow_blank=True, default="", max_length=200)
    mode = serializers.ChoiceField(["force_review", "block"], default="force_review")
    engaged = serializers.BooleanField(default=True)
    reason = serializers.CharField(max_length=5000)


class ConnectorSerializer(serializers.ModelSerializer):
    actions = serializers.SerializerMethodField()

    class Meta:
        model = Connector
        fields = ["slug", "name", "kind", "actions", "dry_run"]

    def get_actions(self, connector: Connector) -> list[str]:
        return supported_actions(connector)
