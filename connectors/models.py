"""Connectors to systems of record, the sandbox system of record, and execution attempts."""

from __future__ import annotations

from django.db import models
from simple_history.models import HistoricalRecords


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
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["started_at", "id"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.attempt} of {self.proposal_id}: {self.outcome}"
