"""Signed events to an integration's callback_url when one of its proposals changes status.

The services never call this module: a status change is seen where it is recorded, in the
proposal's history row (django-simple-history's `post_create_historical_record`). The event
is stored as a CallbackDelivery in the same transaction as the change (an outbox), so an
event exists exactly when its change committed, and is sent only after the commit.

Delivery is at least once: a receiver should deduplicate on `X-HITL-Delivery`, and use
`occurred_at` or the proposal's `updated_at` to ignore events older than one it has seen,
because a retried event can arrive after a later one.

Wire format (CONTRACT.md, "Events to callback_url")::

    POST <callback_url>
    Content-Type: application/json
    X-HITL-Event: proposal.executed
    X-HITL-Delivery: 42
    X-HITL-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes, key = signing secret>

    {"event": "proposal.executed", "occurred_at": "...", "proposal": {<the proposal JSON>}}
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import secrets
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from simple_history.signals import post_create_historical_record

from approvals import outbox
from approvals.models import CallbackDelivery, Integration, Proposal, Status
from connectors import outbound

logger = logging.getLogger(__name__)

# The event a proposal's new status announces; a status not listed here (new, executing)
# sends nothing. One status change, one event:
# - proposal.decided: the policy routed it, to reviewers (pending_review), to an operator's
#   hold (triage) or refused it (blocked); also when an operator releases a held or stale
#   proposal back to review.
# - proposal.approved / proposal.rejected: the final verdict, by the reviewers (or by the
#   policy when its outcome is `auto`, or an operator rejecting a held proposal); approved
#   again when an operator retries a failed execution.
# - proposal.info_requested: a reviewer asked the agent a question (answer: POST .../info/);
#   the answer puts it back to review, announced as proposal.decided.
# - proposal.expired: it waited past its maximum age; stored in bulk by the expiry sweep
#   (approvals.sweeps), which writes no per-row history signal.
# - the others announce the execution's end or the proposal's withdrawal.
STATUS_EVENTS: dict[str, str] = {
    Status.PENDING_REVIEW: "proposal.decided",
    Status.INFO_REQUESTED: "proposal.info_requested",
    Status.TRIAGE: "proposal.decided",
    Status.BLOCKED: "proposal.decided",
    Status.APPROVED: "proposal.approved",
    Status.REJECTED: "proposal.rejected",
    Status.EXECUTED: "proposal.executed",
    Status.DRY_RUN: "proposal.dry_run",
    Status.HANDLED_MANUALLY: "proposal.handled_manually",
    Status.FAILED: "proposal.failed",
    Status.STALE: "proposal.stale",
    Status.ROLLED_BACK: "proposal.rolled_back",
    Status.CANCELLED: "proposal.cancelled",
    Status.EXPIRED: "proposal.expired",
    # AI-assisted recommendations (docs/approval-models.md): routed to an inbox, then judged by a person.
    Status.RECOMMENDED: "proposal.decided",
    Status.DISMISSED: "proposal.dismissed",
    Status.DONE_ELSEWHERE: "proposal.done_elsewhere",
}

# Seconds to wait after the 1st, 2nd, ... failed attempt; after the last, the delivery fails.
RETRY_DELAYS_SECONDS: tuple[float, ...] = (30, 120, 600, 3600, 6 * 3600)
TIMEOUT_SECONDS = 10.0
# A claimed attempt owns the delivery this long; if its worker dies, the sweep retries after.
CLAIM_SECONDS = 60.0
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
USER_AGENT = "HITL-Gov-Callbacks/1"


# ---- recording: status change -> CallbackDelivery (inside the change's transaction) ----------------

def connect() -> None:
    """Called from AppConfig.ready(): watch the proposal's history for status changes."""
    post_create_historical_record.connect(
        on_history_row, sender=Proposal.history.model, dispatch_uid="approvals.events.on_history_row"
    )


def on_history_row(sender, instance: Proposal, history_instance, **kwargs) -> None:
    """Record an event when this history row shows a new status of a proposal with a callback_url."""
    event = event_for(instance, history_instance)
    if event is None:
        return
    try:
        with transaction.atomic():  # a savepoint: a broken event must never undo the decision it reports
            delivery = record_event(instance, event, history_instance.history_date)
    except Exception:
        logger.exception("could not record %s for proposal %s", event, instance.pk)
        return
    transaction.on_commit(lambda: send_after_commit(delivery.pk), robust=True)  # a lambda: robust logging needs __qualname__


def event_for(proposal: Proposal, history_row) -> str | None:
    """The event this history row announces, or None (no callback_url, no status change, unlisted status)."""
    if not proposal.callback_url:
        return None
    event = STATUS_EVENTS.get(history_row.status)
    if event is None:
        return None
    previous = (
        Proposal.history.filter(id=proposal.pk, history_id__lt=history_row.history_id)
        .order_by("-history_id").values_list("status", flat=True).first()
    )
    return None if previous == history_row.status else event


def record_event(proposal: Proposal, event: str, occurred_at: datetime) -> CallbackDelivery:
    """Store the event as a pending delivery, due at once (the beat sweep sends it if the enqueue is lost)."""
    return CallbackDelivery.objects.create(
        proposal=proposal, event=event, url=proposal.callback_url,
        payload=build_payload(event, proposal, occurred_at), next_attempt_at=timezone.now(),
    )


def record_in_bulk(proposal_ids, event: str, occurred_at: datetime) -> int:
    """The same event for many proposals changed by one set-based write (a sweep), in one insert.

    No history signal fires for such writes, so the sweep calls this in its transaction. The
    stored body names only the proposal's id and status; `deliver` completes it from the
    committed proposal before the first attempt (serialising thousands here would hold the
    sweep's transaction). Returns how many were stored; the callback sweep sends them.
    """
    rows = Proposal.objects.filter(pk__any_of=list(proposal_ids)).exclude(callback_url="").values_list(
        "pk", "callback_url", "status")
    stamp = json.loads(json.dumps(occurred_at, cls=DjangoJSONEncoder))
    deliveries = [
        CallbackDelivery(proposal_id=pk, event=event, url=url, next_attempt_at=occurred_at,
                         payload={"event": event, "occurred_at": stamp, "proposal": {"id": str(pk), "status": status}})
        for pk, url, status in rows
    ]
    CallbackDelivery.objects.bulk_create(deliveries, batch_size=500)
    return len(deliveries)


def _is_summary(payload: dict[str, Any]) -> bool:
    return set(payload.get("proposal", {})) == {"id", "status"}


def build_payload(event: str, proposal: Proposal, occurred_at: datetime) -> dict[str, Any]:
    """The event body as plain JSON values, so what is stored is exactly what is signed and sent."""
    from approvals.serializers import ProposalSerializer

    body = {"event": event, "occurred_at": occurred_at, "proposal": ProposalSerializer(proposal).data}
    return json.loads(json.dumps(body, cls=DjangoJSONEncoder))


def send_after_commit(delivery_id: int) -> None:
    """After the change commits: take the committed proposal into the body, then enqueue the send.

    Inside the transaction the proposal may not be complete yet (review tiers are opened
    after the routing save), so the body is refreshed from what committed, unless the
    proposal has already moved on to another status. The delivery row is the outbox: if the
    broker is down the publish error is only logged, and the beat sweep sends it when due.
    """
    refresh_payload(delivery_id)
    outbox.publish("approvals.tasks.deliver_callback", [delivery_id])


def complete_payload(delivery_id: int) -> None:
    """A summary stored in bulk becomes the full body, from the proposal as it is now (an expired one stays so)."""
    delivery = CallbackDelivery.objects.select_related("proposal").get(pk=delivery_id)
    payload = build_payload(delivery.event, delivery.proposal, delivery.payload["occurred_at"])
    CallbackDelivery.objects.filter(pk=delivery_id, attempts=0, state=CallbackDelivery.State.PENDING).update(payload=payload)


def refresh_payload(delivery_id: int) -> None:
    delivery = CallbackDelivery.objects.select_related("proposal").get(pk=delivery_id)
    proposal = delivery.proposal
    if proposal.status != delivery.payload["proposal"]["status"]:
        return
    payload = build_payload(delivery.event, proposal, delivery.payload["occurred_at"])
    CallbackDelivery.objects.filter(pk=delivery_id, attempts=0, state=CallbackDelivery.State.PENDING).update(payload=payload)


# ---- the integration's signing secret -------------------------------------------------------------

def new_signing_secret() -> str:
    return secrets.token_urlsafe(32)


def signing_secret(integration_id: int) -> str:
    """The integration's secret, made at first use. Written with update(), so never copied into history."""
    secret = Integration.objects.values_list("signing_secret", flat=True).get(pk=integration_id)
    if secret:
        return secret
    Integration.objects.filter(pk=integration_id, signing_secret="").update(signing_secret=new_signing_secret())
    return Integration.objects.values_list("signing_secret", flat=True).get(pk=integration_id)


def issue_signing_secret(integration: Integration, rotate: bool = False) -> str | None:
    """A secret to show its owner once: a new one if there is none yet or `rotate`; else None.

    An existing secret is not shown again; rotating replaces it (pending retries are signed
    with the new one when they are sent).
    """
    if rotate:
        secret = new_signing_secret()
        Integration.objects.filter(pk=integration.pk).update(signing_secret=secret)
        return secret
    secret = new_signing_secret()
    made = Integration.objects.filter(pk=integration.pk, signing_secret="").update(signing_secret=secret)
    return secret if made else None


def signature(secret: str, body: bytes) -> str:
    """What a receiver recomputes over the raw body and compares (hmac.compare_digest) with X-HITL-Signature."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---- delivery --------------------------------------------------------------------------------------

def retry_delays() -> tuple[float, ...]:
    return tuple(getattr(settings, "CALLBACK_RETRY_DELAYS_SECONDS", RETRY_DELAYS_SECONDS))


def due_deliveries(now: datetime | None = None) -> list[int]:
    """Pending deliveries whose next attempt is due: for the beat sweep to enqueue."""
    now = now or timezone.now()
    due = CallbackDelivery.objects.filter(state=CallbackDelivery.State.PENDING, next_attempt_at__lte=now)
    return list(due.order_by("next_attempt_at").values_list("pk", flat=True)[:1000])


def claim(delivery_id: int, now: datetime) -> int | None:
    """Take the due delivery for one attempt; returns the attempt number, or None if it is not ours to send.

    The conditional update makes a redelivered or doubly-swept task do nothing.
    """
    claimed = CallbackDelivery.objects.filter(
        pk=delivery_id, state=CallbackDelivery.State.PENDING, next_attempt_at__lte=now,
    ).update(attempts=F("attempts") + 1, next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS))
    if not claimed:
        return None
    return CallbackDelivery.objects.values_list("attempts", flat=True).get(pk=delivery_id)


def deliver(delivery_id: int, now: datetime | None = None) -> str:
    """One attempt to send a due delivery; records the outcome and when to try again. Returns the state."""
    now = now or timezone.now()
    if _is_summary(CallbackDelivery.objects.values_list("payload", flat=True).get(pk=delivery_id)):
        complete_payload(delivery_id)
    attempt = claim(delivery_id, now)
    if attempt is None:
        return "not due"
    delivery = CallbackDelivery.objects.select_related("proposal").get(pk=delivery_id)
    try:
        status, error = post_event(delivery)
    except Exception as exc:  # a bug or a database hiccup is still a failed attempt, so the retries end
        logger.exception("callback delivery %s failed unexpectedly", delivery_id)
        status, error = None, f"{type(exc).__name__}: {exc}"
    return record_attempt(delivery_id, attempt, status, error, now)


def post_event(delivery: CallbackDelivery) -> tuple[int | None, str]:
    """POST the signed body once. Returns (HTTP status or None, error or '')."""
    problem = unsafe_url(delivery.url)
    if problem:
        return None, problem
    body = json.dumps(delivery.payload, sort_keys=True, separators=(",", ":")).encode()
    request = urllib.request.Request(delivery.url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT,
        "X-HITL-Event": delivery.event, "X-HITL-Delivery": str(delivery.pk),
        "X-HITL-Signature": signature(signing_secret(delivery.proposal.integration_id), body),
    })
    timeout = float(getattr(settings, "CALLBACK_TIMEOUT_SECONDS", TIMEOUT_SECONDS))
    try:
        with _opener().open(request, timeout=timeout) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code}: {_excerpt(exc)}"
    except outbound.OutboundRefused as exc:  # a private address, perhaps only now (DNS rebinding)
        return None, f"refused to call {delivery.url!r}: {exc}"
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:  # refused, DNS, TLS, timeout, garbage
        return None, f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"


def unsafe_url(url: str) -> str:
    """Why the URL must not be called, or ''. The API checked it at submit; this guards other writers."""
    parsed = urlparse(url)
    if parsed.scheme == "https" or (parsed.scheme == "http" and parsed.hostname in LOCAL_HOSTS):
        return ""
    return f"refused to call {url!r}: callbacks go to https (http only on localhost)"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as the failure it is: the signed body goes only where it was addressed."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _opener() -> urllib.request.OpenerDirector:
    # Resolved once, every address checked, connected to a checked one (connectors.outbound).
    return outbound.build_opener(_NoRedirects)


def _excerpt(exc: urllib.error.HTTPError) -> str:
    try:
        return exc.read(500).decode("utf-8", "replace")
    except Exception:  # the body is only a hint for the operator
        return ""


def record_attempt(delivery_id: int, attempt: int, status: int | None, error: str, now: datetime) -> str:
    """Delivered on a 2xx; otherwise due again after the backoff, or failed when the retries are used up."""
    if status is not None and 200 <= status < 300:
        fields = {"state": CallbackDelivery.State.DELIVERED, "delivered_at": now, "next_attempt_at": None,
                  "last_status": status, "last_error": ""}
    else:
        fields = {"last_status": status, "last_error": (error or f"HTTP {status}")[:2000], **_after_failure(attempt, now)}
    # Only the attempt that claimed it records (a worker that outlived its claim does not overwrite a newer one).
    CallbackDelivery.objects.filter(pk=delivery_id, attempts=attempt, state=CallbackDelivery.State.PENDING).update(**fields)
    return fields.get("state", CallbackDelivery.State.PENDING)


def _after_failure(attempt: int, now: datetime) -> dict[str, Any]:
    delays = retry_delays()
    if attempt <= len(delays):
        return {"next_attempt_at": now + timedelta(seconds=delays[attempt - 1])}
    return {"state": CallbackDelivery.State.FAILED, "next_attempt_at": None}
