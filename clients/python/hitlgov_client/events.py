"""Verifying HITL Gov's signed callback events (CONTRACT.md, "Events to callback_url").

`X-HITL-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>` with the integration's
signing secret, compared in constant time. A genuine event replayed later is refused by its
`occurred_at` (older than `tolerance` seconds); pass `seen`, a set of delivery ids you keep,
to also refuse a delivery already handled within that window.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, MutableSet
from datetime import datetime, timezone

from .errors import EventVerificationError
from .models import Event, Proposal, parse_time

DEFAULT_TOLERANCE_SECONDS = 300.0


def sign(body: bytes, secret: str) -> str:
    """The signature header value HITL Gov sends for this body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_event(body: bytes, headers: Mapping[str, str], secret: str, *, tolerance: float = DEFAULT_TOLERANCE_SECONDS,
                 now: datetime | None = None, seen: MutableSet[str] | None = None) -> Event:
    """The event if it is genuine and fresh; otherwise EventVerificationError saying why.

    `body` must be the exact bytes received (not re-serialised JSON). Header names are matched
    without regard to case.
    """
    if not secret:
        raise EventVerificationError("no signing secret to verify with")
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    given = lower.get("x-hitl-signature", "")
    if not hmac.compare_digest(given.encode(), sign(body, secret).encode()):
        raise EventVerificationError("the signature does not match the body: not sent by HITL Gov, or altered")
    try:
        payload = json.loads(body)
        occurred = parse_time(payload["occurred_at"])
        event, proposal = str(payload["event"]), Proposal.from_json(payload["proposal"])
    except (ValueError, KeyError, TypeError) as exc:
        raise EventVerificationError(f"a signed body that is not an event: {exc}") from None
    if occurred is None or occurred.tzinfo is None:
        raise EventVerificationError("the event has no time zone-aware occurred_at")
    age = ((now or datetime.now(timezone.utc)) - occurred).total_seconds()
    if abs(age) > tolerance:
        raise EventVerificationError(f"the event occurred {age:.0f} s from now, outside {tolerance:.0f} s: a replay or a wrong clock")
    delivery = lower.get("x-hitl-delivery", "")
    if seen is not None:
        if delivery in seen:
            raise EventVerificationError(f"delivery {delivery} was already handled")
        seen.add(delivery)
    return Event(event=event, occurred_at=occurred, delivery=delivery, proposal=proposal)
