"""The feedback export: what people did with each proposal, for the teams that build the agents.

One JSON object per proposal (submitted in [since, until)), oldest first::

    {"proposal": "0b7c...", "agent": "refund-bot", "connector": "helpdesk", "action": "refund",
     "target": {"type": "order", "id": "A-1001"}, "submitted_at": "...Z", "confidence": 0.93,
     "outcome": "review", "rule": "refunds-finance", "status": "rolled_back",
     "verdict": "approved" | "rejected" | "edited" | null,
     "edit": {"by": "finance1", "changes": [{"field": "refund_amount", "before": "120.00", "after": "60.00"}]} | null,
     "reviews": [{"reviewer": "finance2", "verdict": "approve", "reason": "...", "at": "...Z"}],
     "reasons": ["decided review: ...", "only half was damaged", ...],
     "exception_categories": ["wrong_amount", "rolled_back"], "rationale": "..."}

`verdict` is the people's final word: rejected if anyone rejected, else edited if a reviewer
changed the planned change, else approved if reviewers approved it, else null (no person decided:
it ran automatically, was blocked, or is still open). `edit` compares the change the agent sent
(its first history row) with the change as it stands. `reasons` are the history reasons in order.
`exception_categories` lists, in order, the category of every step that did not go as proposed
(a reviewer's choice or the system's). `rationale` is blank once retention purged it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime

from approvals.audit import plain
from approvals.models import Proposal, Status
from ledger.models import Event

CHUNK = 500


def feedback_rows(since: datetime | None, until: datetime | None) -> Iterator[dict]:
    proposals = Proposal.objects.select_related("connector", "edited_by").order_by("created_at", "pk")
    if since:
        proposals = proposals.filter(created_at__gte=since)
    if until:
        proposals = proposals.filter(created_at__lt=until)
    ids = proposals.values_list("pk", flat=True)
    for start in range(0, ids.count(), CHUNK):
        chunk = list(proposals[start:start + CHUNK].prefetch_related("reviews__reviewer"))
        yield from _rows(chunk)


def _rows(chunk: list[Proposal]) -> Iterator[dict]:
    ids = [p.pk for p in chunk]
    history: dict = defaultdict(list)
    for row in Proposal.history.filter(id__in=ids).order_by("history_id").values("id", "changes", "history_change_reason"):
        history[row["id"]].append(row)
    categories: dict = defaultdict(list)
    for subject, category in (Event.objects.filter(subject__in=[str(pk) for pk in ids]).exclude(category="")
                              .order_by("position").values_list("subject", "category")):
        categories[subject].append(category)
    for p in chunk:
        reviews = list(p.reviews.all())
        original = history[p.pk][0]["changes"] if history[p.pk] else p.changes
        yield {
            "proposal": str(p.pk), "agent": p.agent, "connector": p.connector.slug, "action": p.action,
            "target": {"type": p.target_type, "id": p.target_id}, "submitted_at": plain(p.created_at),
            "confidence": p.confidence, "outcome": p.outcome or None, "rule": (p.decision or {}).get("rule"),
            "status": p.status, "verdict": _verdict(p, reviews),
            "edit": {"by": p.edited_by.get_username() if p.edited_by else None, "changes": _diff(original, p.changes)}
            if p.edited else None,
            "reviews": [{"reviewer": r.reviewer.get_username(), "verdict": r.verdict, "reason": r.reason,
                         "at": plain(r.created_at)} for r in reviews],
            "reasons": [row["history_change_reason"] for row in history[p.pk] if row["history_change_reason"]],
            "exception_categories": categories[str(p.pk)], "rationale": p.rationale,
        }


def _verdict(proposal: Proposal, reviews: list) -> str | None:
    if proposal.status == Status.REJECTED or any(r.verdict == "reject" for r in reviews):
        return "rejected"
    if proposal.edited:
        return "edited"
    return "approved" if reviews else None


def _diff(before: dict, after: dict) -> list[dict]:
    return [{"field": name, "before": plain(before.get(name)), "after": plain(after.get(name))}
            for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]
