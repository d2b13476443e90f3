"""Translate between the editable matrix in the database and the engine's immutable MatrixSpec."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction

from policies import engine
from policies.matrix_spec import FACT_NAMES
from policies.models import ApprovalMatrix, Budget, ReviewTier, Rule


# Rule columns stored as the spec holds them (None = not a condition), the same in both directions.
RISK_FIELDS = ("conflicting_record", "overrides_min", "burst_ratio_min", "unusual_amount", "first_actions", "sample_percent")


def _names(text: str) -> frozenset[str] | None:
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    return names or None


def _text(names: frozenset[str] | None) -> str:
    return ",".join(sorted(names)) if names else ""


def _tier_spec(tier: ReviewTier) -> engine.Tier:
    return engine.Tier(
        group=tier.group.name,
        required=tier.required,
        mode=tier.mode,
        sla_minutes=tier.sla_minutes,
        escalation_group=tier.escalation_group.name if tier.escalation_group else "",
        bulk_allowed=tier.bulk_allowed,
        remind_at=tier.remind_at,
        signed_links=tier.signed_links,
    )


def _rule_spec(rule: Rule, tiers: list[ReviewTier]) -> engine.Rule:
    return engine.Rule(
        name=rule.name,
        outcome=rule.outcome,
        tiers=tuple(_tier_spec(t) for t in tiers),
        description=rule.description,
        connectors=_names(rule.connectors),
        actions=_names(rule.actions),
        agents=_names(rule.agents),
        target_types=_names(rule.target_types),
        currency=rule.currency or None,
        amount_min=rule.amount_min,
        amount_max=rule.amount_max,
        confidence_min=rule.confidence_min,
        confidence_max=rule.confidence_max,
        impacts=_names(rule.impacts),
        fields_any=_names(rule.fields_any),
        touches_sensitive=rule.touches_sensitive,
        missing_facts=rule.missing_facts,
        amount_mismatch=rule.amount_mismatch,
        override_rate_min=rule.override_rate_min,
        budget_exceeded=rule.budget_exceeded or None,
        max_age_minutes=rule.max_age_minutes, **{name: getattr(rule, name) for name in RISK_FIELDS},
    )


def _budget_spec(budget: Budget) -> engine.Budget:
    return engine.Budget(
        name=budget.name,
        metric=budget.metric,
        cap=budget.cap,
        window_minutes=budget.window_minutes,
        connectors=_names(budget.connectors),
        actions=_names(budget.actions),
        agents=_names(budget.agents),
    )


def to_spec(matrix: ApprovalMatrix) -> engine.MatrixSpec:
    """The engine's view of a stored matrix version (three queries, whatever its size)."""
    tiers = list(ReviewTier.objects.filter(matrix=matrix).select_related("group", "escalation_group"))
    by_rule: dict[int | None, list[ReviewTier]] = {}
    for tier in tiers:
        by_rule.setdefault(tier.rule_id, []).append(tier)
    return engine.MatrixSpec(
        version=matrix.version,
        name=matrix.name,
        default_outcome=matrix.default_outcome,
        default_tiers=tuple(_tier_spec(t) for t in by_rule.get(None, [])),
        rules=tuple(_rule_spec(r, by_rule.get(r.pk, [])) for r in matrix.rules.order_by("position", "id")),
        sensitive_fields=_names(matrix.sensitive_fields) or frozenset(),
        required_facts=tuple(name.strip() for name in matrix.required_facts.split(",") if name.strip()),
        budgets=tuple(_budget_spec(b) for b in matrix.budgets.order_by("name")),
        tests=tuple(_test_spec(case) for case in matrix.tests or []),
        default_max_age_minutes=matrix.default_max_age_minutes,
        info_wait_minutes=matrix.info_wait_minutes,
    )


_FACT_ORDER = {name: position for position, name in enumerate(FACT_NAMES)}


def _ordered_facts(facts: dict[str, Any]) -> dict[str, Any]:
    """Test facts in the order Facts declares them, whatever order the JSON column kept.

    PostgreSQL's jsonb reorders keys and a freshly saved row still holds the author's order,
    so without this the same version would export as different YAML text.
    """
    return dict(sorted(facts.items(), key=lambda item: (_FACT_ORDER.get(item[0], len(_FACT_ORDER)), item[0])))


def _test_spec(case: dict[str, Any]) -> engine.MatrixTest:
    rules = case.get("expect_rules")
    return engine.MatrixTest(
        name=case["name"], facts=_ordered_facts(case["facts"]), expect=case["expect"],
        expect_rules=tuple(rules) if rules is not None else None,
    )


def _test_data(case: engine.MatrixTest) -> dict[str, Any]:
    data: dict[str, Any] = {"name": case.name, "facts": dict(case.facts), "expect": case.expect}
    if case.expect_rules is not None:
        data["expect_rules"] = list(case.expect_rules)
    return data


def _group(name: str) -> Group:
    group, _ = Group.objects.get_or_create(name=name)
    return group


def _save_tiers(matrix: ApprovalMatrix, rule: Rule | None, tiers: tuple[engine.Tier, ...]) -> None:
    for position, tier in enumerate(tiers):
        ReviewTier.objects.create(
            matrix=matrix, rule=rule, position=position, group=_group(tier.group), required=tier.required,
            mode=tier.mode, sla_minutes=tier.sla_minutes, bulk_allowed=tier.bulk_allowed,
            remind_at=tier.remind_at, signed_links=tier.signed_links,
            escalation_group=_group(tier.escalation_group) if tier.escalation_group else None,
        )


def _decimal(value: Decimal | None) -> Decimal | None:
    return Decimal(value) if value is not None else None


@transaction.atomic
def save_spec(spec: engine.MatrixSpec, *, version: int, author=None, notes: str = "") -> ApprovalMatrix:
    """Store a spec as a new draft version (YAML import, copies of published versions, the demo)."""
    matrix = ApprovalMatrix.objects.create(
        version=version, name=spec.name, notes=notes, default_outcome=spec.default_outcome, author=author,
        sensitive_fields=_text(frozenset(spec.sensitive_fields)), required_facts=",".join(spec.required_facts),
        tests=[_test_data(case) for case in spec.tests],
        default_max_age_minutes=spec.default_max_age_minutes, info_wait_minutes=spec.info_wait_minutes,
    )
    _save_tiers(matrix, None, spec.default_tiers)
    for position, r in enumerate(spec.rules):
        rule = Rule.objects.create(
            matrix=matrix, position=position, name=r.name, description=r.description, outcome=r.outcome,
            connectors=_text(r.connectors), actions=_text(r.actions), agents=_text(r.agents),
            target_types=_text(r.target_types), currency=r.currency or "", amount_min=_decimal(r.amount_min),
            amount_max=_decimal(r.amount_max), confidence_min=r.confidence_min, confidence_max=r.confidence_max,
            impacts=_text(r.impacts), fields_any=_text(r.fields_any), touches_sensitive=r.touches_sensitive,
            missing_facts=r.missing_facts, amount_mismatch=r.amount_mismatch, override_rate_min=r.override_rate_min,
            budget_exceeded=r.budget_exceeded or "", max_age_minutes=r.max_age_minutes,
            **{name: getattr(r, name) for name in RISK_FIELDS},
        )
        _save_tiers(matrix, rule, r.tiers)
    for b in spec.budgets:
        Budget.objects.create(
            matrix=matrix, name=b.name, metric=b.metric, cap=b.cap, window_minutes=b.window_minutes,
            connectors=_text(b.connectors), actions=_text(b.actions), agents=_text(b.agents),
        )
    return matrix


# ---------------------------------------------------------------------------- what the tables can hold

RULE_NAME_SETS = ("connectors", "actions", "agents", "target_types", "impacts", "fields_any")
BUDGET_NAME_SETS = ("connectors", "actions", "agents")


def _max_length(model: type, field: str) -> int:
    return model._meta.get_field(field).max_length


def _decimal_fits(model: type, field: str, value: Decimal | None) -> bool:
    """Whether the column stores the value exactly (a YAML '0.005' must not silently become 0.01)."""
    if value is None:
        return True
    column = model._meta.get_field(field)
    step = Decimal(1).scaleb(-column.decimal_places)
    return value == value.quantize(step) and abs(value) < Decimal(10) ** (column.max_digits - column.decimal_places)


def _name_set_problem(names: frozenset[str] | tuple[str, ...] | None, limit: int) -> str:
    if not names:
        return ""
    bad = sorted(n for n in names if "," in n or n != n.strip())
    if bad:
        return f"names are stored comma-separated, so {', '.join(repr(n) for n in bad)} cannot be stored"
    if len(",".join(names)) > limit:
        return f"too long to store (at most {limit} characters, comma-separated)"
    return ""


def _text_problem(value: str | None, limit: int) -> str:
    return f"too long to store (at most {limit} characters)" if value and len(value) > limit else ""


def storage_errors(spec: engine.MatrixSpec) -> list[engine.MatrixError]:
    """What a valid spec holds that the database columns cannot store exactly, each with its path.

    validate() judges meaning; this judges fit (lengths, decimal places, names in
    comma-separated columns), so an import either stores the file exactly or stores nothing.
    """
    problems: list[tuple[str, str]] = [
        ("name", _text_problem(spec.name, _max_length(ApprovalMatrix, "name"))),
        ("sensitive_fields", _name_set_problem(spec.sensitive_fields, _max_length(ApprovalMatrix, "sensitive_fields"))),
        ("required_facts", _name_set_problem(spec.required_facts, _max_length(ApprovalMatrix, "required_facts"))),
    ]
    problems += _tier_problems("default_tiers", spec.default_tiers)
    for i, r in enumerate(spec.rules):
        at = f"rules[{i}]"
        problems.append((f"{at}.description", _text_problem(r.description, _max_length(Rule, "description"))))
        for attr in RULE_NAME_SETS:
            problems.append((f"{at}.{attr}", _name_set_problem(getattr(r, attr), _max_length(Rule, attr))))
        for attr in ("amount_min", "amount_max"):
            if not _decimal_fits(Rule, attr, getattr(r, attr)):
                problems.append((f"{at}.{attr}", "stored with 2 decimal places and at most 16 digits before the point"))
        problems += _tier_problems(f"{at}.tiers", r.tiers)
    for i, b in enumerate(spec.budgets):
        at = f"budgets[{i}]"
        if not _decimal_fits(Budget, "cap", b.cap):
            problems.append((f"{at}.cap", "stored with 2 decimal places and at most 16 digits before the point"))
        for attr in BUDGET_NAME_SETS:
            problems.append((f"{at}.{attr}", _name_set_problem(getattr(b, attr), _max_length(Budget, attr))))
    return [engine.MatrixError(path, message) for path, message in problems if message]


def _tier_problems(path: str, tiers: tuple[engine.Tier, ...]) -> list[tuple[str, str]]:
    limit = _max_length(Group, "name")
    out = []
    for i, t in enumerate(tiers):
        out.append((f"{path}[{i}].group", _text_problem(t.group, limit)))
        out.append((f"{path}[{i}].escalation_group", _text_problem(t.escalation_group, limit)))
    return out


def stored_form(spec: engine.MatrixSpec, version: int) -> engine.MatrixSpec:
    """The spec as the database gives it back: its new version, empty name sets as "any", budgets by name.

    These differences carry no meaning (the engine reads an empty set as "any" and budgets
    are looked up by name); an import compares against this to prove nothing else changed.
    """
    def rule(r: engine.Rule) -> engine.Rule:
        return replace(r, **{a: getattr(r, a) or None for a in RULE_NAME_SETS})

    def budget(b: engine.Budget) -> engine.Budget:
        return replace(b, **{a: getattr(b, a) or None for a in BUDGET_NAME_SETS})

    return replace(
        spec, version=version, rules=tuple(rule(r) for r in spec.rules),
        budgets=tuple(sorted((budget(b) for b in spec.budgets), key=lambda b: b.name)),
    )


def rule_spec(rule: Rule) -> engine.Rule:
    """One stored rule as the engine sees it (its tiers from `rule.tiers`, prefetched or not): for showing it."""
    return _rule_spec(rule, list(rule.tiers.all()))
