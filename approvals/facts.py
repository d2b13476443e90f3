"""What the policy engine is told about a proposal, and the fingerprint of its planned change."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.utils import timezone

from approvals.models import Proposal, Status
from policies import engine

OVERRIDE_WINDOW = 50  # recent decided proposals of an agent that its override rate looks at
DECIDED = (Status.APPROVED, Status.REJECTED, Status.EXECUTING, Status.EXECUTED, Status.FAILED, Status.ROLLED_BACK)
NOT_COUNTED_IN_BUDGETS = (Status.REJECTED, Status.BLOCKED, Status.CANCELLED, Status.EXPIRED)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def change_hash(proposal: Proposal) -> str:
    """Binds approvals to the exact planned change: the executor refuses anything else."""
    planned = {
        "connector": proposal.connector_id, "action": proposal.action,
        "target": [proposal.target_type, proposal.target_id], "changes": proposal.changes,
    }
    return hashlib.sha256(canonical_json(planned).encode()).hexdigest()


def _present(proposal: Proposal) -> frozenset[str]:
    supplied = {
        "target": bool(proposal.target_id), "changes": bool(proposal.changes), "amount": proposal.amount is not None,
        "currency": bool(proposal.currency), "evidence": bool(proposal.evidence), "rationale": bool(proposal.rationale.strip()),
    }
    return frozenset(name for name, given in supplied.items() if given)


def override_rate(agent: str, *, exclude: Any = None) -> float | None:
    """Share of the agent's recent decided proposals that humans rejected or edited."""
    recent = list(
        Proposal.objects.filter(agent=agent, status__in=DECIDED, outcome="review")
        .exclude(pk=exclude).order_by("-created_at").values_list("status", "edited")[:OVERRIDE_WINDOW]
    )
    if not recent:
        return None
    overridden = sum(1 for status, edited in recent if status == Status.REJECTED or edited)
    return overridden / len(recent)


def budget_usage(proposal: Proposal, budgets: tuple[engine.Budget, ...]) -> dict[str, Decimal]:
    """Use of each budget in its window, this proposal included."""
    usage = {}
    for budget in budgets:
        since = timezone.now() - timedelta(minutes=budget.window_minutes)
        scope = Q(created_at__gte=since) & ~Q(status__in=NOT_COUNTED_IN_BUDGETS) & ~Q(pk=proposal.pk)
        for attr, names in (("connector__slug", budget.connectors), ("action", budget.actions), ("agent", budget.agents)):
            if names and "*" not in names:
                scope &= Q(**{f"{attr}__in": names})
        totals = Proposal.objects.filter(scope).aggregate(n=Count("pk"), amount=Sum("amount"))
        if budget.metric == "count":
            usage[budget.name] = Decimal(totals["n"] + 1)
        else:
            usage[budget.name] = (totals["amount"] or Decimal(0)) + (proposal.amount or Decimal(0))
    return usage


def facts_for(proposal: Proposal, matrix: engine.CompiledMatrix) -> engine.Facts:
    facts = engine.Facts(
        connector=proposal.connector.slug, action=proposal.action, agent=proposal.agent,
        target_type=proposal.target_type, amount=proposal.amount, currency=proposal.currency,
        confidence=proposal.confidence, customer_impact=proposal.customer_impact,
        fields=frozenset(proposal.changes), present=_present(proposal),
        override_rate=override_rate(proposal.agent, exclude=proposal.pk),
    )
    budgets = engine.applicable_budgets(facts, matrix)
    if not budgets:
        return facts
    return dataclasses.replace(facts, usage=budget_usage(proposal, budgets))


def facts_as_dict(facts: engine.Facts) -> dict[str, Any]:
    """The facts a decision saw, JSON-ready: stored with it so simulations replay exactly these."""
    return {
        "connector": facts.connector, "action": facts.action, "agent": facts.agent, "target_type": facts.target_type,
        "amount": str(facts.amount) if facts.amount is not None else None, "currency": facts.currency,
        "confidence": facts.confidence, "customer_impact": facts.customer_impact, "fields": sorted(facts.fields),
        "override_rate": facts.override_rate, "usage": {name: str(used) for name, used in facts.usage.items()},
        "present": sorted(facts.present),
    }
