"""Typed views of the contract's JSON. Each keeps the whole answer in `raw`, so fields
added to the contract later are never lost."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Statuses after which nothing more happens to a proposal on its own.
FINAL = frozenset({"executed", "dry_run", "handled_manually", "failed", "rejected", "blocked", "rolled_back",
                   "expired", "cancelled"})
# What a client that carries out the action itself waits for: the verdict.
DECIDED = FINAL | {"approved"}
NOT_APPROVED = frozenset({"rejected", "blocked", "expired", "cancelled"})


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class Decision:
    outcome: str
    reasons: list[str] = field(default_factory=list)
    rule: str | None = None
    matrix_version: int | None = None

    @classmethod
    def from_json(cls, data: dict | None) -> Decision | None:
        if not data:
            return None
        return cls(outcome=data.get("outcome", ""), reasons=list(data.get("reasons") or []), rule=data.get("rule"),
                   matrix_version=data.get("matrix_version"))


@dataclass(frozen=True)
class Execution:
    outcome: str
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    after: dict[str, Any] = field(default_factory=dict)
    finished_at: datetime | None = None

    @classmethod
    def from_json(cls, data: dict | None) -> Execution | None:
        if not data:
            return None
        return cls(outcome=data.get("outcome", ""), error=data.get("error") or "", result=data.get("result") or {},
                   after=data.get("after") or {}, finished_at=parse_time(data.get("finished_at")))


@dataclass(frozen=True)
class Proposal:
    """A proposal as the API returns it (CONTRACT.md, "Read a proposal")."""

    id: str
    status: str
    status_reason: str
    agent: str
    connector: str
    action: str
    target: dict[str, str] | None
    changes: dict[str, Any]
    preview: dict[str, Any]
    decision: Decision | None
    execution: Execution | None
    due_at: datetime | None
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Proposal:
        return cls(
            id=str(data["id"]), status=data.get("status", ""), status_reason=data.get("status_reason") or "",
            agent=data.get("agent", ""), connector=data.get("connector", ""), action=data.get("action", ""),
            target=data.get("target"), changes=data.get("changes") or {}, preview=data.get("preview") or {},
            decision=Decision.from_json(data.get("decision")), execution=Execution.from_json(data.get("execution")),
            due_at=_due(data.get("review")), raw=data,
        )

    @property
    def done(self) -> bool:
        """Nothing more will happen to it on its own. An unknown status is not done (the contract says so)."""
        return self.status in FINAL


def _due(review: dict | None) -> datetime | None:
    """When the tier now waiting on reviewers is due."""
    tiers = (review or {}).get("tiers") or []
    waiting = [parse_time(t.get("due_at")) for t in tiers if t.get("state") == "active" and t.get("due_at")]
    return min(waiting) if waiting else None


@dataclass(frozen=True)
class Event:
    """A verified callback event."""

    event: str
    occurred_at: datetime
    delivery: str
    proposal: Proposal
