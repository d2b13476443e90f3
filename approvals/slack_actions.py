"""Slack's interactivity endpoint: Approve / Reject pressed in a notification.

Slack signs each request (HMAC of `v0:timestamp:body` with the app's signing secret); a bad
signature, a timestamp more than 5 minutes off, or a request already seen is refused. The
Slack user becomes a product user (an admin's mapping, else the same email through users.info)
and the press becomes the same `record_verdict` the admin calls, bound to the change the
message showed: a stale button, an unknown user or someone outside the tier's group gets an
ephemeral refusal, and a decision replaces the message with who decided.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from approvals import notification_delivery
from approvals.models import Notification, NotificationChannel, SlackIdentity
from connectors import outbound
from connectors.adapters.base import PermanentError
from connectors.secrets import resolve_secret

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 5 * 60  # Slack's own advice, and what SignatureVerifier enforces
SLACK_REJECT_REASON = "rejected in Slack (no reason can be typed on a button; ask the reviewer)"


@csrf_exempt
@require_POST
def actions(request: HttpRequest) -> JsonResponse:
    body, timestamp = request.body, request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    try:
        verifier = SignatureVerifier(resolve_secret(settings.SLACK_SIGNING_SECRET_REF))
    except (ValueError, PermanentError) as exc:  # not configured, or the reference points at nothing
        logger.error("Slack actions refused: SLACK_SIGNING_SECRET_REF: %s", exc)
        return JsonResponse({"error": "Slack actions are not configured here"}, status=503)
    if not _signed(verifier, body, timestamp, signature):
        return JsonResponse({"error": "the request is not signed by Slack"}, status=401)
    try:
        payload = json.loads(request.POST.get("payload", ""))
        action = payload["actions"][0]
        slack_user, response_url = payload["user"]["id"], payload.get("response_url", "")
    except (ValueError, KeyError, IndexError, TypeError):
        return JsonResponse({"error": "payload: not a Slack block action"}, status=400)
    if not verifier.is_valid(body, timestamp, signature):  # signed, but outside the window: an old request replayed
        return _refuse(response_url, "This button press is more than 5 minutes old (a replay?): nothing was decided.",
                       status=401)
    if not cache.add(f"slack-action:{signature}", 1, timeout=2 * WINDOW_SECONDS):
        return _refuse(response_url, "This request was already handled: nothing more was decided.", status=409)
    if action.get("action_id") not in ("approve", "reject"):
        return JsonResponse({})  # Open is a link: Slack only tells us it was pressed
    return _decide(action, slack_user, response_url)


def _signed(verifier: SignatureVerifier, body: bytes, timestamp: str, signature: str) -> bool:
    """The signature matches, whatever the timestamp (the window is checked after, to say "replay")."""
    if not timestamp or not signature:
        return False
    expected = verifier.generate_signature(timestamp=timestamp, body=body)
    return expected is not None and hmac.compare_digest(expected, signature)


def _decide(action: dict[str, Any], slack_user: str, response_url: str) -> JsonResponse:
    from approvals import services

    try:
        notification_id, change_hash = str(action.get("value", "")).split(":", 1)
        notification = Notification.objects.select_related("channel", "proposal").get(pk=int(notification_id))
    except (ValueError, Notification.DoesNotExist):
        return _refuse(response_url, "This button does not belong to a HITL Gov message.")
    user = product_user(slack_user, notification.channel)
    if user is None:
        return _refuse(response_url, f"Your Slack account ({slack_user}) is not linked to a HITL Gov user: "
                                     "ask an administrator to map it, or use the same email in both.")
    verdict = action["action_id"]
    reason = SLACK_REJECT_REASON if verdict == "reject" else ""
    try:
        services.record_verdict(notification.proposal_id, user, verdict, reason, via="slack", expected_hash=change_hash)
    except (PermissionDenied, services.NotReviewable, ValidationError) as exc:
        text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        return _refuse(response_url, f"Not recorded: {text}.")
    decided = f"{user.get_username()} {verdict}d this via Slack at {timezone.now():%Y-%m-%d %H:%M} UTC."
    _respond(response_url, {"replace_original": True, "text": decided, "blocks": _decided_blocks(notification, decided)})
    return JsonResponse({"text": decided})


def product_user(slack_user: str, channel: NotificationChannel):
    """The mapped user, else the active user with the Slack profile's email (asked with the channel's bot token)."""
    mapped = SlackIdentity.objects.filter(slack_user_id=slack_user).select_related("user").first()
    if mapped is not None:
        return mapped.user if mapped.user.is_active else None
    if channel.kind != NotificationChannel.Kind.SLACK:
        return None  # a webhook has no token to ask Slack who this is
    try:
        client = WebClient(token=resolve_secret(channel.secret_ref), base_url=notification_delivery.slack_api_url(),
                           timeout=notification_delivery.TIMEOUT_SECONDS)
        email = client.users_info(user=slack_user)["user"]["profile"].get("email", "")
    except Exception as exc:  # Slack down or the user gone: unknown, refused with the message that says so
        logger.warning("could not look up Slack user %s: %s: %s", slack_user, type(exc).__name__, exc)
        return None
    matches = list(get_user_model().objects.filter(email__iexact=email, is_active=True)[:2]) if email else []
    return matches[0] if len(matches) == 1 else None


def _decided_blocks(notification: Notification, decided: str) -> list[dict[str, Any]]:
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{notification.subject}*\n{notification.text}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": decided}]},
    ]


def _refuse(response_url: str, text: str, status: int = 200) -> JsonResponse:
    """An ephemeral message to the person who pressed (only they see it); the original stays."""
    message = {"response_type": "ephemeral", "replace_original": False, "text": text}
    _respond(response_url, message)
    return JsonResponse(message, status=status)


def _respond(response_url: str, message: dict[str, Any]) -> None:
    if not response_url:
        return
    try:
        outbound.check_url(response_url)
        WebhookClient(response_url, timeout=notification_delivery.TIMEOUT_SECONDS).send_dict(message)
    except Exception as exc:  # the decision stands; only Slack's view of it is late
        logger.warning("could not answer Slack at its response_url: %s: %s", type(exc).__name__, exc)
