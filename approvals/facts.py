"""What the policy engine is told about a proposal, and the fingerprint of its planned change."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from types import MappingProxyType

from django.db import connection
from django.db.models import Count, Q, QuerySet, Sum
from django.utils import timezone

from approvals import risk
from approvals.models import DECIDED, JUDGED_ALERT, MAY_BE_JUDGED, REVIEWED_OUTCOMES, OversightTask, Proposal, Status
from connectors.services import ActionFacts, action_facts
from policies import engine
from policies.breakers import TrackRecord

OVERRIDE_WINDOW = 50  # recent decided proposals of an agent that its override rate looks at
# On-the-loop work is judged when its oversight task is confirmed or rolled back (the others: approvals.models).
JUDGED_AFTER = (OversightTask.State.CONFIRMED, OversightTask.State.ROLLED_BACK)
OVERRULED = (Status.REJECTED, Status.DISMISSED)  # with an on-the-loop rollback: people said the agent was wrong
CENT = Decimal("0.01")  # amounts are stored with two places: hash them as stored
CUSTOMER_VISIBLE_IMPACT = "medium"  # the least impact of an action the customer sees, whatever was declared
NOT_COUNTED_IN_BUDGETS = (Status.REJECTED, Status.BLOCKED, Status.CANCELLED, Status.EXPIRED)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def change_hash(proposal: Proposal) -> str:
    """Binds approvals to the exact planned change and every declared fact the policy weighed
    (agent, amount, confidence, impact, what was supplied): the executor refuses anything else."""
    planned = {
        "connector": proposal.connector_id, "action": proposal.action,
        "target": [proposal.target_type, proposal.target_id], "changes": proposal.changes,
        "agent": proposal.agent, "amount": None if proposal.amount is None else str(Decimal(proposal.amount).quantize(CENT)),
        "currency": proposal.currency, "confidence": proposal.confidence, "customer_impact": proposal.customer_impact,
        "present": sorted(_present(proposal)),
    }
    return hashlib.sha256(canonical_json(planned).encode()).hexdigest()


def change_money(changes: dict[str, Any], money_fields: frozenset[str]) -> Decimal | None:
    """The money a change carries: the sum of its money fields' sizes (a negative refund still moves money).

    None when the change has none of the action's money fields. Values are checked at the edge
    (`check_money_fields`); one that is not a number here counts as nothing rather than breaking a decision.
    """
    amounts = [_money(changes[name]) for name in sorted(money_fields) if name in changes]
    amounts = [amount for amount in amounts if amount is not None]
    return sum((abs(amount) for amount in amounts), Decimal(0)) if amounts else None


def _money(value: Any) -> Decimal | None:
    try:
        number = Decimal(str(value)) if isinstance(value, (int, float, str, Decimal)) and not isinstance(value, bool) else None
    except InvalidOperation:
        return None
    return number if number is not None and number.is_finite() else None


def check_money_fields(changes: dict[str, Any], money_fields: frozenset[str]) -> dict[str, str]:
    """Money fields whose value is not a finite number, by their path in the request."""
    return {f"changes.{name}": "a money field must be a finite number, e.g. \"120.00\""
            for name in sorted(money_fields) if name in changes and _money(changes[name]) is None}


def _present(proposal: Proposal) -> frozenset[str]:
    supplied = {
        "target": bool(proposal.target_id), "changes": bool(proposal.changes), "amount": proposal.amount is not None,
        "currency": bool(proposal.currency), "evidence": bool(proposal.evidence), "rationale": bool(proposal.rationale.strip()),
    }
    return frozenset(name for name, given in supplied.items() if given)


def judged_rows(
    agent: str, *, connector: str = "", since: Any = None, window: int = OVERRIDE_WINDOW, exclude: Any = None,
    action: str = "",
) -> QuerySet:
    """The agent's `window` most recent reviewed proposals, each flagged overruled / overridden (and
    overridden on `action`): the rows `track_record` sums, as a queryset another statement can nest."""
    judged = (Q(status__in=DECIDED, outcome__in=REVIEWED_OUTCOMES) | Q(outcome="assisted", status__in=JUDGED_ALERT)
              | Q(outcome="on_the_loop", oversight__state__in=JUDGED_AFTER))
    reviewed = Proposal.objects.filter(MAY_BE_JUDGED).filter(judged, agent=agent)  # the first: the partial index's
    if connector:
        reviewed = reviewed.filter(connector__slug=connector)
    if since is not None:
        reviewed = reviewed.filter(created_at__gt=since)
    if exclude is not None:
        reviewed = reviewed.exclude(pk=exclude)
    overruled = Q(status__in=OVERRULED) | Q(oversight__state=OversightTask.State.ROLLED_BACK)
    overridden = overruled | Q(edited=True)
    return (reviewed.order_by("-created_at")
            .annotate(overruled=risk.flag(overruled), overridden=risk.flag(overridden),
                      overridden_here=risk.flag(overridden & Q(action=action)))
            .values("action", "overruled", "overridden", "overridden_here")[:window])


# The sums over judged_rows that make a TrackRecord, in its field order.
TRACK_SUMS = ("COUNT(*)", "SUM(overruled)", "SUM(overridden)", "SUM(overridden_here)")
# judged_rows(agent, exclude=pk, action=action) written by hand, for the decision's one statement
# (approvals.risk.surroundings says why); tests/test_risk_statement.py compares the two.
_OVERRULED = f"(p.status IN ({risk.literals(OVERRULED)}) OR o.state = '{OversightTask.State.ROLLED_BACK}')"
_OVERRIDDEN = f"({_OVERRULED} OR p.edited)"
# The first condition is the partial index proposal_agent_judged's own (models.MAY_BE_JUDGED), compiled
# from the same Q, so that SQLite, which matches an index's condition by its form, reads that index;
# the second keeps of the on-the-loop work only what its oversight judged. tests/test_risk_statement.py
# checks both planners use the index.
_MAY_BE_JUDGED = risk.condition(MAY_BE_JUDGED, "p")
JUDGED_ROWS = f"""SELECT p.action, CASE WHEN {_OVERRULED} THEN 1 ELSE 0 END AS overruled,
    CASE WHEN {_OVERRIDDEN} THEN 1 ELSE 0 END AS overridden,
    CASE WHEN {_OVERRIDDEN} AND p.action = %s THEN 1 ELSE 0 END AS overridden_here
    FROM approvals_proposal p LEFT OUTER JOIN approvals_oversighttask o ON p.id = o.proposal_id
    WHERE {_MAY_BE_JUDGED} AND (p.outcome <> 'on_the_loop' OR o.state IN ({risk.literals(JUDGED_AFTER)}))
    AND p.agent = %s AND p.id <> %s ORDER BY p.created_at DESC LIMIT {OVERRIDE_WINDOW}"""


def judged_part(proposal: Proposal) -> risk.Part:
    """The track record `decision_facts` reads: TRACK_SUMS over the agent's judged rows, this proposal left out."""
    return TRACK_SUMS, JUDGED_ROWS, [proposal.action, proposal.agent, risk.key(proposal)]


def track_record(
    agent: str, *, connector: str = "", since: Any = None, window: int = OVERRIDE_WINDOW, exclude: Any = None,
    action: str = "",
) -> TrackRecord:
    """How people judged the agent's most recent reviewed proposals: the one definition that the
    `override_rate` and `overrides` facts and circuit breakers share. Reviewed means decided after
    review or triage, an alert dismissed or acted on, or on-the-loop work confirmed or rolled back
    after the fact; rejected means rejected, dismissed or rolled back by its reviewer; overridden
    means rejected or edited by a person. One aggregate statement, grouped by action."""
    rows = judged_rows(agent, connector=connector, since=since, window=window, exclude=exclude)
    inner, params = rows.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT action, COUNT(*), SUM(overruled), SUM(overridden) FROM ({inner}) AS judged "
                       f"GROUP BY action", params)
        by_action = cursor.fetchall()
    return TrackRecord(reviewed=sum(n for _, n, _, _ in by_action), rejected=sum(r for _, _, r, _ in by_action),
                       overridden=sum(o for _, _, _, o in by_action),
                       overridden_by_action=MappingProxyType({a: o for a, _, _, o in by_action}))


def record_from(sums: tuple, action: str) -> TrackRecord:
    """The record TRACK_SUMS over judged_rows(..., action=action) gives, its overrides counted for that action only."""
    reviewed, rejected, overridden, here = (value or 0 for value in sums)
    return TrackRecord(reviewed=reviewed, rejected=rejected, overridden=overridden,
                       overridden_by_action=MappingProxyType({action: here}))


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


def decision_facts(
    proposal: Proposal, matrix: engine.CompiledMatrix, *, review_required: bool = False,
    human_edit: engine.Tier | None = None,
) -> engine.Facts:
    """Everything the policy is told about this proposal now: the change, the agent's record, budget
    usage and the circumstances (a failed preview, a person's edit, a release to review).

    Where the change says more than the agent declared, the stricter wins: the money is the larger
    of the declared amount and the money the change carries (a disagreement is a fact of its own),
    a customer-visible action has at least medium impact, and the connector's sensitive fields count.
    """
    declared = action_facts(proposal.connector, proposal.action)
    (sums,), surroundings = risk.surroundings(proposal, judged_part(proposal))  # one statement
    record = record_from(sums, proposal.action)
    derived = change_money(proposal.changes, declared.money_fields)
    amounts = [amount for amount in (proposal.amount, derived) if amount is not None]
    facts = engine.Facts(
        connector=proposal.connector.slug, action=proposal.action, agent=proposal.agent,
        target_type=proposal.target_type, amount=max(amounts) if amounts else None, currency=proposal.currency,
        confidence=proposal.confidence, customer_impact=_stricter_impact(proposal.customer_impact, declared),
        fields=frozenset(proposal.changes), present=_present(proposal),
        amount_mismatch=derived is not None and proposal.amount != derived,
        sensitive=frozenset(proposal.changes) & declared.sensitive_fields,
        override_rate=record.override_rate, overrides=record.overrides_on(proposal.action),
        preview_failed=bool(proposal.preview_error), human_edit=human_edit, review_required=review_required,
        read_only=declared.read_only,
        **surroundings,
    )
    budgets = engine.applicable_budgets(facts, matrix)
    if not budgets:
        return facts
    return dataclasses.replace(facts, usage=budget_usage(proposal, budgets))


def _stricter_impact(declared: str, action: ActionFacts) -> str:
    if action.customer_visible and engine.IMPACTS.index(declared) < engine.IMPACTS.index(CUSTOMER_VISIBLE_IMPACT):
        return CUSTOMER_VISIBLE_IMPACT
    return declared


def facts_as_dict(facts: engine.Facts) -> dict[str, Any]:
    """The facts a decision saw, JSON-ready: stored with it so simulations replay exactly these."""
    return {
        "connector": facts.connector, "action": facts.action, "agent": facts.agent, "target_type": facts.target_type,
        "amount": str(facts.amount) if facts.amount is not None else None, "currency": facts.currency,
        "confidence": facts.confidence, "customer_impact": facts.customer_impact, "fields": sorted(facts.fields),
        "override_rate": facts.override_rate, "usage": {name: str(used) for name, used in facts.usage.items()},
        "present": sorted(facts.present), "preview_failed": facts.preview_failed,
        "human_edit": engine.tier_as_dict(facts.human_edit) if facts.human_edit else None,
        "review_required": facts.review_required, "amount_mismatch": facts.amount_mismatch,
        "sensitive": sorted(facts.sensitive), "read_only": facts.read_only, **risk_facts_as_dict(facts),
    }


def risk_facts_as_dict(facts: engine.Facts) -> dict[str, Any]:
    """The risk-trigger facts, JSON-ready (the counterpart of approvals.risk)."""
    return {
        "open_on_record": facts.open_on_record, "record_changed": sorted(facts.record_changed),
        "overrides": facts.overrides, "burst_ratio": facts.burst_ratio,
        "amount_p99": str(facts.amount_p99) if facts.amount_p99 is not None else None,
        "prior_actions": facts.prior_actions, "sample_point": facts.sample_point,
    }
