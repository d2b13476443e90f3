"""The contract's errors as exceptions. Every error under /api/ answers
`{"errors": {field: [message, ...]}, "detail": "..."}`; the exception carries both."""

from __future__ import annotations

from typing import Any


class HitlGovError(Exception):
    """An error answer from HITL Gov. `errors` maps each field (or "detail") to its messages."""

    def __init__(self, status: int, detail: str, errors: dict[str, list[str]] | None = None, body: Any = None):
        self.status, self.detail, self.errors, self.body = status, detail, errors or {}, body
        super().__init__(f"{status}: {detail}" if detail else str(status))


class ValidationError(HitlGovError):
    """400: the request was refused; `errors` names each bad field. Nothing was stored."""


class AuthenticationError(HitlGovError):
    """401: no key, or an unknown or revoked one."""


class PermissionDenied(HitlGovError):
    """403: the key lacks the scope, or its user the right, for this call."""


class NotFound(HitlGovError):
    """404: no such proposal of this integration."""


class Conflict(HitlGovError):
    """409: the proposal's state does not allow this (already reported, not cancellable...)
    or an idempotency key was reused for a different request."""


class RateLimited(HitlGovError):
    """429: too many calls. `retry_after` is the server's Retry-After in seconds, if it sent one."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(HitlGovError):
    """5xx: HITL Gov failed; a 500 carries an id to quote in `detail`."""


class WaitTimeout(Exception):
    """wait() gave up: the proposal was still not in one of the awaited statuses."""

    def __init__(self, proposal: Any, timeout: float):
        self.proposal = proposal
        super().__init__(f"proposal {proposal.id} still {proposal.status} after {timeout:g} s")


class NotApproved(Exception):
    """A governed call was not approved: the function did not run. `proposal` says why."""

    def __init__(self, proposal: Any):
        self.proposal = proposal
        why = proposal.status_reason or "; ".join(proposal.decision.reasons if proposal.decision else [])
        super().__init__(f"{proposal.action} was {proposal.status}" + (f": {why}" if why else ""))


class ProposalRejected(NotApproved):
    """A reviewer (or an operator) rejected the call."""


class ProposalBlocked(NotApproved):
    """The policy refused the call outright; `proposal.decision.reasons` says why."""


class ProposalExpired(NotApproved):
    """Nobody decided in time."""


class EventVerificationError(Exception):
    """A callback event that must not be trusted: bad signature, stale timestamp, replayed delivery."""


_BY_STATUS = {400: ValidationError, 401: AuthenticationError, 403: PermissionDenied, 404: NotFound, 409: Conflict,
              429: RateLimited}


def error_for(status: int, body: Any, retry_after: float | None = None) -> HitlGovError:
    """The exception for an error answer."""
    errors = body.get("errors") if isinstance(body, dict) and isinstance(body.get("errors"), dict) else {}
    errors = {str(k): (v if isinstance(v, list) else [v]) for k, v in errors.items()}
    detail = body.get("detail") if isinstance(body, dict) else None
    detail = str(detail or "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in errors.items()) or "")
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else HitlGovError)
    if cls is RateLimited:
        return RateLimited(status, detail, errors, body, retry_after=retry_after)
    return cls(status, detail, errors, body)
