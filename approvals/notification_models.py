"""Where a review group hears of its work, each message sent, and who a Slack user is here.

Imported at the end of approvals.models (Django finds an app's models there); the logic is in
approvals.notifications.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.db import models
from simple_history.models import HistoricalRecords


class NotificationChannel(models.Model):
    """One way to reach a review group: email addresses, a Slack channel (bot token), or a Slack
    incoming webhook. Credentials are references (`env:NAME`, `file:PATH`) as connectors' are."""

    class Kind(models.TextChoices):
        EMAIL = "email", "email"
        SLACK = "slack", "Slack channel (bot token)"
        SLACK_WEBHOOK = "slack_webhook", "Slack incoming webhook"

    group = models.ForeignKey(Group, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.EMAIL)
    emails = models.TextField(blank=True, help_text="Email: addresses, one a line or comma-separated")
    slack_channel = models.CharField(max_length=100, blank=True, help_text="Slack channel: its ID, e.g. C0123456")
    secret_ref = models.CharField(
        max_length=300, blank=True,
        help_text="Slack: the bot token's reference; Slack webhook: the webhook URL's reference "
                  "(env:HITL_SECRET_... or file:...), never the value",
    )
    active = models.BooleanField(default=True)
    history = HistoricalRecords()

    class Meta:
        ordering = ["group__name", "kind", "id"]

    def __str__(self) -> str:
        return f"{self.group.name}: {self.get_kind_display()}"

    @property
    def addresses(self) -> list[str]:
        return [a.strip() for a in self.emails.replace(",", "\n").splitlines() if a.strip()]


class Notification(models.Model):
    """One message to one recipient about one event, stored in the event's transaction.

    Unique per channel, recipient and event key: an event notifies each recipient once, however
    many sweeps race to announce it. Delivery (approvals.notifications.deliver) claims the row
    by a conditional update, so a duplicated task message never sends it twice either.
    """

    class State(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    proposal = models.ForeignKey("approvals.Proposal", on_delete=models.CASCADE, related_name="notifications")
    task = models.ForeignKey("approvals.ReviewTask", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    channel = models.ForeignKey(NotificationChannel, on_delete=models.PROTECT, related_name="notifications")
    event = models.CharField(max_length=30)
    key = models.CharField(max_length=200, help_text="The event this announces: one message per recipient")
    recipient = models.CharField(max_length=300)
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+", help_text="The person an email's signed link is for")
    subject = models.CharField(max_length=300)
    text = models.TextField()
    change_hash = models.CharField(max_length=64, blank=True, help_text="The change the message's buttons decide")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    slack_ts = models.CharField(max_length=50, blank=True, help_text="The Slack message, to update later")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["channel", "recipient", "key"], name="one_notification_per_event")]

    def __str__(self) -> str:
        return f"{self.event} to {self.recipient}: {self.state}"


class SlackIdentity(models.Model):
    """A Slack user mapped to a product user, where their emails differ (otherwise matched by email)."""

    slack_user_id = models.CharField(max_length=50, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    history = HistoricalRecords()

    class Meta:
        verbose_name_plural = "Slack identities"

    def __str__(self) -> str:
        return f"{self.slack_user_id} -> {self.user}"
