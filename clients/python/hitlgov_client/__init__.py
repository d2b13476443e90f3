"""Python SDK for HITL Gov (CONTRACT.md, API v1): no Django, one HTTP library (httpx)."""

from .client import AsyncClient, Backoff, Client
from .errors import (
    AuthenticationError, Conflict, EventVerificationError, HitlGovError, NotApproved, NotFound, PermissionDenied,
    ProposalBlocked, ProposalExpired, ProposalRejected, RateLimited, ServerError, ValidationError, WaitTimeout,
)
from .events import sign, verify_event
from .governed import governed
from .models import DECIDED, FINAL, Decision, Event, Execution, Proposal

__all__ = [
    "AsyncClient", "Backoff", "Client", "governed", "verify_event", "sign",
    "Proposal", "Decision", "Execution", "Event", "FINAL", "DECIDED",
    "HitlGovError", "ValidationError", "AuthenticationError", "PermissionDenied", "NotFound", "Conflict",
    "RateLimited", "ServerError", "WaitTimeout", "NotApproved", "ProposalRejected", "ProposalBlocked",
    "ProposalExpired", "EventVerificationError",
]
