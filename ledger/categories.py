"""Exception categories: why something did not go as proposed, in a small vocabulary a board extends.

The system sets one when a proposal is rejected, edited, goes stale, fails, is rolled back or
expires (approvals registers the mapping); a reviewer may name a more precise one with a
verdict, which wins. The category is stored on the operation's decision-log event, so it can
never be changed afterwards, and reported per agent and action (`by_agent_and_action`).
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db.models import Count

# slug -> label. Set by the system (the first block) or chosen by a reviewer (all of them).
BUILT_IN: dict[str, str] = {
    "rejected": "Rejected by a reviewer",
    "edited": "Changed by a reviewer before approval",
    "blocked": "Blocked by the policy",
    "stale": "The live record changed before execution",
    "failed": "Execution failed",
    "rolled_back": "Rolled back after execution",
    "expired": "Expired without a decision",
    "cancelled": "Withdrawn by the agent",
    "wrong_amount": "Wrong amount",
    "wrong_target": "Wrong record or customer",
    "insufficient_evidence": "Not enough evidence",
    "policy_violation": "Against company policy",
    "customer_risk": "Risk to the customer",
    "duplicate": "Duplicate of other work",
    "other": "Other (see the reason)",
}


def vocabulary() -> dict[str, str]:
    """The built-in categories and the board's own, slug -> label."""
    from ledger.models import ExceptionCategory

    return {**BUILT_IN, **dict(ExceptionCategory.objects.values_list("slug", "label"))}


def check(category: str) -> str:
    """`category` if it is in the vocabulary ('' stays ''), else a ValidationError naming the field."""
    if category and category not in vocabulary():
        raise ValidationError({"category": f"{category!r} is not an exception category"})
    return category


def by_agent_and_action(since: datetime | None = None, until: datetime | None = None) -> list[dict]:
    """How often each category occurred, per agent and action, in [since, until)."""
    from ledger.models import Event

    events = Event.objects.exclude(category="")
    if since:
        events = events.filter(at__gte=since)
    if until:
        events = events.filter(at__lt=until)
    return list(events.values("agent", "action", "category").annotate(count=Count("id")).order_by("agent", "action", "category"))
