"""A matrix rule as a sentence a board member reads without code.

"refund, credit or discount of 1,000 USD or more -> finance, 2 approvals, due in 4 h, escalates to
finance-leads". Pure: it reads the engine's Rule and Tier dataclasses only. Every condition field of
`engine.Rule` is rendered; a field this module has no phrase for (a condition added later) still
appears, as "<field name> <value>", so a sentence never hides a condition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from decimal import Decimal
from typing import Any

from policies.matrix_spec import Rule, Tier

NOT_CONDITIONS = frozenset({"name", "outcome", "tiers", "description"})
OUTCOME_PHRASES = {"auto": "runs automatically", "triage": "held for triage", "block": "blocked"}


def either(names: Iterable[str], joiner: str = "or") -> str:
    """"a", "a or b", "a, b or c": sorted, so the same set always reads the same."""
    items = sorted(names)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {joiner} {items[-1]}"


def money(amount: Decimal, currency: str) -> str:
    text = f"{amount:,.2f}".removesuffix(".00")
    return f"{text} {currency}"


def minutes(total: int) -> str:
    """"30 min", "4 h", "1 h 30 min", "2 d"."""
    if total < 60:
        return f"{total} min"
    hours, rest = divmod(total, 60)
    if hours % 24 == 0 and not rest:
        return f"{hours // 24} d"
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _amount(rule: Rule) -> str:
    low, high, currency = rule.amount_min, rule.amount_max, rule.currency or ""
    if low is not None and high is not None:
        return f"from {money(low, currency)} to under {money(high, currency)}"
    if low is not None:
        return f"of {money(low, currency)} or more"
    if high is not None:
        return f"under {money(high, currency)}"
    return f"in {currency}"


def _confidence(rule: Rule) -> str:
    low, high = rule.confidence_min, rule.confidence_max
    if low is not None and high is not None:
        return f"with confidence from {low:g} to below {high:g}"
    return f"with confidence >= {low:g}" if low is not None else f"with confidence below {high:g}"


def _flag(yes: str, no: str) -> Callable[[Any], str]:
    return lambda value: yes if value else no


# Condition field -> phrase. Ranges are rendered once, from their first field.
PHRASES: dict[str, Callable[[Any], str]] = {
    "target_types": lambda v: f"on a {either(v)}",
    "impacts": lambda v: f"with {either(v)} customer impact",
    "fields_any": lambda v: f"changing {either(v)}",
    "touches_sensitive": _flag("touching a sensitive field", "touching no sensitive field"),
    "missing_facts": _flag("missing a required fact", "with every required fact"),
    "amount_mismatch": _flag("whose declared amount differs from the change", "whose declared amount matches the change"),
    "override_rate_min": lambda v: f"from an agent people overrode {v:.0%} or more of the time",
    "budget_exceeded": lambda v: f"over the {v} budget",
}
RANGES = {"currency": _amount, "confidence_min": _confidence}
SKIPPED = {"amount_min", "amount_max", "confidence_max"}  # part of the ranges above
SUBJECT = {"connectors", "actions", "agents"}


def conditions(rule: Rule) -> list[str]:
    """The rule's conditions beyond who and what, in the Rule's field order."""
    out = []
    for f in fields(rule):  # the rule's own fields: a condition added later is shown too
        if f.name in NOT_CONDITIONS | SUBJECT:
            continue
        value = getattr(rule, f.name)
        if f.name in RANGES:
            partner = ("amount_min", "amount_max") if f.name == "currency" else ("confidence_max",)
            if value is not None or any(getattr(rule, p) is not None for p in partner):
                out.append(RANGES[f.name](rule))
        elif f.name in SKIPPED or value is None or value == frozenset():
            continue
        elif f.name in PHRASES:
            out.append(PHRASES[f.name](value))
        else:
            shown = either(value) if isinstance(value, frozenset) else value
            out.append(f"{f.name.replace('_', ' ')} {shown}")
    return out


def subject(rule: Rule) -> str:
    what = either(rule.actions) if rule.actions else "any action"
    parts = [what]
    if rule.agents:
        parts.append(f"by {either(rule.agents)}")
    if rule.connectors:
        parts.append(f"on {either(rule.connectors)}")
    return " ".join(parts)


def tier_phrase(tier: Tier) -> str:
    who = "every member" if tier.mode == "all" else f"{tier.required} approval{'s' if tier.required != 1 else ''}"
    parts = [tier.group, who, f"due in {minutes(tier.sla_minutes)}"]
    if tier.escalation_group:
        parts.append(f"escalates to {tier.escalation_group}")
    if tier.bulk_allowed:
        parts.append("bulk approval allowed")
    return ", ".join(parts)


def consequence(outcome: str, tiers: tuple[Tier, ...]) -> str:
    if outcome == "review":
        return "; then ".join(tier_phrase(t) for t in tiers) or "review (no tier yet: add one)"
    return OUTCOME_PHRASES.get(outcome, outcome)


def sentence(rule: Rule) -> str:
    """The whole rule: "<what> <conditions> -> <who decides, or what happens>"."""
    return " ".join([subject(rule), *conditions(rule)]) + " -> " + consequence(rule.outcome, rule.tiers)
