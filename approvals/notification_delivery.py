"""Sending stored notifications: email through Django's backend, Slack through slack-sdk.

Each attempt claims its row with a conditional update (pending, due), so a task delivered
twice, or two sweeps, never send one message twice. A failure waits out a backoff in the
outbox (a retry message due then) and fails for good after the last delay; every attempt
counts on the row the admin shows.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient

from approvals import outbox
from approvals.models import Notification, NotificationChannel
from approvals.notifications import ASSIGNED, ESCALATED, REMINDER
from connectors import outbound
from connectors.secrets import resolve_secret

logger = logging.getLogger(__name__)

RETRY_DELAYS_SECONDS: tuple[float, ...] = (30, 120, 600, 3600)
CLAIM_SECONDS = 60
TIMEOUT_SECONDS = 10
# A pending row this long past due has lost its message (a worker died holding it): sent again.
STALLED_SECONDS = 300
SENT, FAILED, RETRY, NOT_DUE = "sent", "failed", "retry", "not due"
ASKING = (ASSIGNED, REMINDER, ESCALATED)  # events whose messages carry Approve / Reject


class SlackRefused(Exception):
    """Slack (or the webhook) answered without accepting the message."""


def retry_delays() -> tuple[float, ...]:
    return tuple(getattr(settings, "NOTIFICATION_RETRY_DELAYS_SECONDS", RETRY_DELAYS_SECONDS))


def deliver_many(ids: list[int], now: datetime | None = None) -> dict[str, int]:
    """Try each due notification once; failures go back to the outbox, due after their backoff."""
    now = now or timezone.now()
    results: dict[str, int] = {}
    retries: list[tuple[int, datetime]] = []
    for notification_id in ids:
        result, next_at = deliver(notification_id, now)
        results[result] = results.get(result, 0) + 1
        if result == RETRY:
            retries.append((notification_id, next_at))
    if retries:
        with transaction.atomic():
            outbox.enqueue("approvals.tasks.deliver_notifications", [[pk for pk, _ in retries]],
                           due_at=min(at for _, at in retries))
    return results


def deliver(notification_id: int, now: datetime) -> tuple[str, datetime | None]:
    """One attempt: (SENT | RETRY | FAILED | NOT_DUE, when to retry)."""
    claimed = Notification.objects.filter(
        pk=notification_id, state=Notification.State.PENDING, next_attempt_at__lte=now,
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
    if not claimed:
        return NOT_DUE, None
    notification = Notification.objects.select_related("channel", "proposal").get(pk=notification_id)
    try:
        slack_ts = send(notification)
    except Exception as exc:  # any failure is a failed attempt, retried or failed for good: never a lost message
        logger.warning("notification %s failed: %s: %s", notification_id, type(exc).__name__, exc)
        return _record_failure(notification, f"{type(exc).__name__}: {exc}", now)
    Notification.objects.filter(pk=notification_id, attempts=notification.attempts).update(
        state=Notification.State.SENT, sent_at=timezone.now(), last_error="", next_attempt_at=None, slack_ts=slack_ts,
    )
    return SENT, None


def _record_failure(notification: Notification, error: str, now: datetime) -> tuple[str, datetime | None]:
    delays = retry_delays()
    if notification.attempts <= len(delays):
        next_at = now + timedelta(seconds=delays[notification.attempts - 1])
        fields = {"last_error": error[:2000], "next_attempt_at": next_at}
        result = RETRY
    else:
        next_at, result = None, FAILED
        fields = {"last_error": error[:2000], "next_attempt_at": None, "state": Notification.State.FAILED}
    Notification.objects.filter(pk=notification.pk, attempts=notification.attempts).update(**fields)
    return result, next_at


def stalled(now: datetime | None = None) -> list[int]:
    """From the sweep: pending rows long past due (their message was lost): one query."""
    cutoff = (now or timezone.now()) - timedelta(seconds=STALLED_SECONDS)
    return list(Notification.objects.filter(state=Notification.State.PENDING, next_attempt_at__lte=cutoff)
                .values_list("pk", flat=True)[:outbox.SWEEP_BATCH])


# ---- the channels ----------------------------------------------------------------------------

def send(notification: Notification) -> str:
    """Send one message; returns the Slack message's ts ('' for email and webhooks)."""
    channel = notification.channel
    if channel.kind == NotificationChannel.Kind.EMAIL:
        EmailMessage(notification.subject, notification.text, settings.DEFAULT_FROM_EMAIL,
                     [notification.recipient]).send()
        return ""
    message = slack_message(notification)
    if channel.kind == NotificationChannel.Kind.SLACK:
        client = WebClient(token=resolve_secret(channel.secret_ref), base_url=slack_api_url(), timeout=TIMEOUT_SECONDS)
        response = client.chat_postMessage(channel=channel.slack_channel, **message)  # raises SlackApiError unless ok
        if notification.event not in ASKING:  # an outcome: the earlier buttons decide nothing now
            close_buttons(client, notification)
        return str(response.get("ts", ""))
    url = resolve_secret(channel.secret_ref)
    outbound.check_url(url)  # an admin-configured URL still reaches only public addresses (or the allowlist)
    response = WebhookClient(url, timeout=TIMEOUT_SECONDS).send(**message)
    if response.status_code != 200:
        raise SlackRefused(f"webhook answered HTTP {response.status_code}: {response.body[:200]}")
    return ""


def close_buttons(client: WebClient, outcome: Notification) -> None:
    """Replace the proposal's earlier messages in this channel with the outcome, without buttons.
    Best effort: a message Slack will not update still refuses its buttons (the proposal moved on)."""
    earlier = Notification.objects.filter(proposal=outcome.proposal_id, channel=outcome.channel_id,
                                          state=Notification.State.SENT).exclude(slack_ts="").exclude(pk=outcome.pk)
    for message in earlier:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{message.subject}*\n{message.text}"}},
                  {"type": "context", "elements": [{"type": "mrkdwn", "text": outcome.subject}]}]
        try:
            client.chat_update(channel=outcome.channel.slack_channel, ts=message.slack_ts, text=outcome.subject,
                               blocks=blocks)
        except Exception as exc:  # the outcome itself was sent; this only tidies older messages
            logger.warning("could not update Slack message %s: %s: %s", message.slack_ts, type(exc).__name__, exc)


def slack_api_url() -> str:
    return getattr(settings, "SLACK_API_URL", "https://slack.com/api/")


def slack_message(notification: Notification) -> dict[str, Any]:
    """Text (for notifications and old clients) and blocks: the message, then Approve / Reject / Open
    when it asks for a decision. Button values name the notification and the change it shows."""
    from approvals.notifications import proposal_url

    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{notification.subject}*\n{notification.text}"}},
    ]
    open_button = {"type": "button", "action_id": "open", "text": {"type": "plain_text", "text": "Open"},
                   "url": proposal_url(notification.proposal)}
    value = f"{notification.pk}:{notification.change_hash}"
    if notification.event in ASKING:
        elements = [
            {"type": "button", "action_id": "approve", "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": "reject", "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject"}},
            open_button,
        ]
    else:
        elements = [open_button]
    blocks.append({"type": "actions", "block_id": "decision", "elements": elements})
    return {"text": notification.subject, "blocks": blocks}
