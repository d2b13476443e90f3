"""Connectors to systems of record, the sandbox system of record, and execution attempts."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from simple_history.models import HistoricalRecords

from connectors.secrets import credential_problems


class Connector(models.Model):
    """A configured system of record. Credentials are references (env:NAME or file:/path), never values."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=30, help_text="Adapter kind: sandbox, rest, salesforce, zendesk, servicenow, email")
    enabled = models.BooleanField(default=True)
    dry_run = models.BooleanField(default=False, help_text="Run everything except the final write")
    config = models.JSONField(default=dict, blank=True, help_text="Non-secret settings of the adapter")
    credentials = models.JSONField(
        default=dict, blank=True, help_text='Secret name to reference, e.g. {"access_token": "env:SF_TOKEN"}'
    )
    health_ok = models.BooleanField(null=True, blank=True, editable=False)
    health_detail = models.CharField(max_length=500, blank=True, editable=False)
    health_checked_at = models.DateTimeField(null=True, blank=True, editable=False)
    history = HistoricalRecords()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def clean(self) -> None:
        """What any connector must be, whoever saves it: a known kind, settings as objects, credentials that
        reach only connector secrets, and a base URL that resolves to a public address (both checked again
        whenever they are used). A message per field; a pasted secret is never echoed."""
        from connectors.adapters.base import adapter_kinds  # importing the package registers every kind

        errors = {}
        if self.kind not in adapter_kinds():
            errors["kind"] = f"unknown kind {self.kind!r}; one of {', '.join(adapter_kinds())}"
        if not isinstance(self.config, dict):
            errors["config"] = "must be a JSON object of setting to value"
        elif problem := self._base_url_problem():
            errors["config"] = [problem]
        if not isinstance(self.credentials, dict):
            errors["credentials"] = 'must be a JSON object of name to reference, e.g. {"token": "env:TOKEN"}'
        elif problems := credential_problems(self.credentials):
            errors["credentials"] = [f"{name}: {problem}" for name, problem in problems.items()]
        if errors:
            raise ValidationError(errors)

    def _base_url_problem(self) -> str:
        from connectors.outbound import OutboundRefused, Unresolvable, check_url
        from connectors.services import base_url_key

        key = base_url_key(self.kind)
        url = (self.config or {}).get(key) if key and isinstance(self.config, dict) else None
        if not url:
            return ""
        try:
            check_url(str(url))
        except Unresolvable:  # perhaps only resolvable where the workers run: checked again on every call
            return ""
        except OutboundRefused as exc:
            return f"{key}: {exc}"
        return ""

    def save(self, *args, **kwargs) -> None:
        # Every writer, not only the admin form: a reference to another secret is never stored.
        fields = kwargs.get("update_fields")
        if (fields is None or "credentials" in fields) and (problems := credential_problems(self.credentials)):
            raise ValidationError({"credentials": [f"{name}: {problem}" for name, problem in problems.items()]})
        super().save(*args, **kwargs)


class SandboxRecord(models.Model):
    """A record of the built-in sandbox system of record: deterministic demos and safe trials."""

    connector = models.ForeignKey(Connector, on_delete=models.CASCADE, related_name="sandbox_records")
    type = models.CharField(max_length=50)
    record_id = models.CharField(max_length=100)
    data = models.JSONField(default=dict)
    applied_keys = models.JSONField(default=list, blank=True, editable=False, help_text="Idempotency keys already written")
    updated_at = models.DateTimeField(auto_now=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["connector", "type", "record_id"]
        constraints = [
            models.UniqueConstraint(fields=["connector", "type", "record_id"], name="unique_sandbox_record"),
        ]

    def __str__(self) -> str:
        return f"{self.connector.slug}:{self.type}/{self.record_id}"


class Execution(models.Model):
    """One attempt to write (or undo) a proposal's change through its connector."""

    class Kind(models.TextChoices):
        EXECUTE = "execute"
        COMPENSATE = "compensate"

    class Outcome(models.TextChoices):
        STARTED = "started"
        SUCCEEDED = "succeeded"
        DRY_RUN = "dry_run"
        FAILED = "failed"
        STALE = "stale"
        MANUAL = "manual"  # an operator did it outside HITL Gov; nothing was written through the connector

    proposal = models.ForeignKey("approvals.Proposal", on_delete=models.PROTECT, related_name="executions")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.EXECUTE)
    attempt = models.PositiveIntegerField(default=1)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.STARTED)
    idempotency_key = models.CharField(max_length=200)
    change_hash = models.CharField(max_length=64)
    request = models.JSONField(default=dict, blank=True)
    response = models.JSONField(default=dict, blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    # When the attempt began (set as the row is built: on the sandbox it is written once, finished).
    started_at = models.DateTimeField(default=timezone.now, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.attempt} of {self.proposal_id}: {self.outcome}"


class RollbackBatch(models.Model):
    """An operator's request to roll back many executed proposals at once, and how far it got.

    The selection (agent, connector, execution time range, or explicit proposals) is resolved
    into `proposal_ids` when the batch is requested, so proposals executed later are never
    swept in. One Celery task works through it, updating the counts after every proposal;
    whatever could not be undone safely lands in `manual` for a human.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"

    agent = models.CharField(max_length=100, blank=True)
    connector = models.ForeignKey(Connector, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    executed_from = models.DateTimeField(null=True, blank=True, help_text="Executions that finished at or after this")
    executed_until = models.DateTimeField(null=True, blank=True, help_text="Executions that finished at or before this")
    proposal_ids = models.JSONField(default=list, blank=True, editable=False, help_text="The proposals selected, in order")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True, editable=False)
    total = models.PositiveIntegerField(default=0, editable=False)
    done = models.PositiveIntegerField(default=0, editable=False)
    rolled_back = models.PositiveIntegerField(default=0, editable=False)
    skipped = models.PositiveIntegerField(default=0, editable=False)
    manual = models.JSONField(
        default=list, blank=True, editable=False,
        help_text="Proposals a human must handle: [{proposal, fields or error}]",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "rollback batches"

    def __str__(self) -> str:
        return f"rollback batch #{self.pk}: {self.done}/{self.total} {self.status}"

    @property
    def selection(self) -> str:
        """The filters in words, for lists and messages."""
        parts = [f"agent {self.agent}"] if self.agent else []
        parts += [f"connector {self.connector.slug}"] if self.connector_id else []
        if self.executed_from or self.executed_until:
            parts.append(f"executed {self.executed_from or '…'} to {self.executed_until or '…'}")
        return ", ".join(parts) or f"{len(self.proposal_ids)} selected proposal(s)"
