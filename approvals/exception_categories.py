"""The exception category the system gives a proposal that did not go as proposed.

Every status change is a django-fsm transition, so one post_transition receiver catches them
all, including transitions added later (an expiry): the category joins the decision-log event
of the operation's transaction. A reviewer's choice (`record_verdict(category=...)`) wins.
"""

from __future__ import annotations

from django_fsm.signals import post_transition

from approvals.models import Proposal, Status
from ledger import capture

BY_STATUS = {
    Status.REJECTED: "rejected",
    Status.BLOCKED: "blocked",
    Status.STALE: "stale",
    Status.FAILED: "failed",
    Status.ROLLED_BACK: "rolled_back",
    Status.EXPIRED: "expired",
    Status.CANCELLED: "cancelled",
}


def connect() -> None:
    post_transition.connect(_transitioned, sender=Proposal, dispatch_uid="approvals-exception-categories")


def _transitioned(sender, instance: Proposal, name: str, source: str, target: str, **kwargs) -> None:
    category = BY_STATUS.get(target)
    if category is None and source == target == Status.PENDING_REVIEW and instance.edited:
        category = "edited"  # routed again after a person changed the planned change
    if category:
        capture.categorize(category, using=instance._state.db or "default")
