"""The data a decision matrix is made of, the checks it must pass before use, and diffs between versions.

Pure Python on purpose (no Django, no database): the Django side translates its rows into
these frozen dataclasses, and `policies.engine` compiles and evaluates them. Keeping the
types separate from the evaluation lets `policies.matrix_yaml` and the tests build specs
without pulling in the engine internals. `policies.engine` re-exports everything here.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any

# Strictness order, strictest last (docs/approval-models.md says why each sits where it does):
# auto (controlled autonomy) < on_the_loop (runs at once, people review after) < review (people
# approve before it runs) < assisted (a recommendation only: the system never writes, a person acts)
# < triage (held: nobody can say yet) < block.
OUTCOMES = ("auto", "on_the_loop", "review", "assisted", "triage", "block")
PEOPLE_OUTCOMES = ("on_the_loop", "review", "assisted")  # outcomes whose rules name tiers: who looks, before or after
RUNS_ALONE = ("auto", "on_the_loop")  # outcomes that write without a person's approval first
IMPACTS = ("none", "low", "medium", "high")
TIER_MODES = ("any", "all")
BUDGET_METRICS = ("amount", "count")
SWITCH_SCOPES = ("global", "connector", "action", "agent")
SWITCH_MODES = ("force_review", "block")
DEFAULT_MAX_AGE_MINUTES = 14 * 24 * 60  # two weeks: nothing waits for ever
DEFAULT_INFO_WAIT_MINUTES = 3 * 24 * 60
DEFAULT_RULE = "default"  # the name Decision.rules carries when no rule matched; reserved
WILDCARD = "*"

_SLUG = re.compile(r"[-a-zA-Z0-9_]{1,100}")  # Django's SlugField alphabet, so names fit the models
_CURRENCY = re.compile(r"[A-Z]{3}")


class MatrixError(ValueError):
    """A problem in a matrix, located by `path` so an editor can point at the offending field."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def within(self, prefix: str) -> MatrixError:
        """The same error seen from an enclosing object (prefix "tests[2]" + path "facts.amount")."""
        return MatrixError(_join(prefix, self.path), self.message)


def _join(prefix: str, path: str) -> str:
    if not prefix:
        return path
    if not path or path.startswith("["):
        return prefix + path
    return f"{prefix}.{path}"


@dataclass(frozen=True)
class Facts:
    """What a proposal says about itself: the only input of a decision besides the matrix and switches.

    Construction normalises the loose types a caller is likely to have at hand (an amount as
    str/int, field names as a list) and freezes `usage`, so a decision's lazy trace, built later
    from these facts, sees exactly what the decision saw.
    """

    connector: str
    action: str
    agent: str
    target_type: str = ""
    amount: Decimal | None = None
    currency: str = ""
    confidence: float = 1.0
    customer_impact: str = "none"
    fields: frozenset[str] = frozenset()
    override_rate: float | None = None
    usage: Mapping[str, Decimal] = field(default_factory=dict)
    present: frozenset[str] = frozenset()
    # Derived from the change itself, whatever the agent declared (connectors declare which fields carry
    # money or are sensitive): `amount` above is already the larger of declared and derived money.
    amount_mismatch: bool = False  # the declared amount differs from the money the change carries
    sensitive: frozenset[str] = frozenset()  # the change's fields its connector declares sensitive
    # Circumstances of this decision, not of the change; each can only tighten the outcome.
    preview_failed: bool = False  # the live record could not be read: nobody can judge the change
    human_edit: Tier | None = None  # a person edited the change: it needs at least their tier
    review_required: bool = False  # an operator (or the system) sent it back to people: review at least
    read_only: bool = False  # the connector marks the action read-only (a board's read-only MCP tool): auto unless a rule says otherwise
    # Risk triggers (approvals.risk computes them cheaply; docs/approval-models.md defines each).
    open_on_record: int = 0  # other open proposals on the same record
    record_changed: frozenset[str] = frozenset()  # fields whose live value differs from what the agent saw
    overrides: int | None = None  # the agent's recent proposals for this action that people rejected or edited
    burst_ratio: float | None = None  # the agent's proposals in the last hour over its usual hourly rate
    amount_p99: Decimal | None = None  # the 99th percentile of the agent's last 1,000 amounts for the action
    prior_actions: int | None = None  # the agent's earlier proposals for this action (counted up to 1,000)
    sample_point: float | None = None  # in [0, 1), fixed per proposal: on-the-loop sampling replays exactly

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.amount is not None:
            set_(self, "amount", to_decimal(self.amount))
        if self.amount_p99 is not None:
            set_(self, "amount_p99", to_decimal(self.amount_p99))
        for name in ("target_type", "currency"):
            if getattr(self, name) is None:
                set_(self, name, "")
        for name in ("fields", "present", "sensitive", "record_changed"):
            if type(getattr(self, name)) is not frozenset:
                set_(self, name, frozenset(getattr(self, name)))
        if type(self.usage) is not MappingProxyType:
            set_(self, "usage", MappingProxyType({name: to_decimal(used) for name, used in self.usage.items()}))
        # A NaN compares false both ways and an unknown impact is in no set: either would slip past every rule.
        if not _finite(self.confidence) or (self.override_rate is not None and not _finite(self.override_rate)):
            raise ValueError("confidence and override_rate must be finite numbers")
        if self.customer_impact not in IMPACTS:
            raise ValueError(f"unknown customer impact {self.customer_impact!r} (known: {', '.join(IMPACTS)})")
        _check_risk_facts(self)


def _check_risk_facts(facts: Facts) -> None:
    """The risk-trigger facts: counts are whole and not negative, ratios finite, the sample point in [0, 1)."""
    for name in ("open_on_record", "overrides", "prior_actions"):
        value = getattr(facts, name)
        if value is not None and (not _is_int(value) or value < 0):
            raise ValueError(f"{name} must be a whole number >= 0")
    if facts.burst_ratio is not None and (not _finite(facts.burst_ratio) or facts.burst_ratio < 0):
        raise ValueError("burst_ratio must be a finite number >= 0")
    if facts.sample_point is not None and (not _finite(facts.sample_point) or not 0 <= facts.sample_point < 1):
        raise ValueError("sample_point must be a number in [0, 1)")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


FACT_NAMES = tuple(f.name for f in fields(Facts))


@dataclass(frozen=True)
class Tier:
    """One review tier: who must approve, how many, and how fast."""

    group: str
    required: int = 1
    mode: str = "any"  # "any": `required` approvals from any members; "all": every member approves
    sla_minutes: int = 240
    escalation_group: str = ""
    bulk_allowed: bool = False
    # When to remind the tier's group, as a fraction of the SLA (0.75: with a quarter left); 0: never.
    remind_at: float = 0.75
    # Whether a signed email link alone (no login) may decide this tier: for low tiers only.
    signed_links: bool = False


@dataclass(frozen=True)
class Rule:
    """A named condition set with an outcome. None / empty conditions mean "any"; given ones are ANDed."""

    name: str
    outcome: str
    tiers: tuple[Tier, ...] = ()
    description: str = ""
    connectors: frozenset[str] | None = None
    actions: frozenset[str] | None = None
    agents: frozenset[str] | None = None
    target_types: frozenset[str] | None = None
    currency: str | None = None
    amount_min: Decimal | None = None
    amount_max: Decimal | None = None
    confidence_min: float | None = None
    confidence_max: float | None = None
    impacts: frozenset[str] | None = None
    fields_any: frozenset[str] | None = None
    touches_sensitive: bool | None = None
    missing_facts: bool | None = None
    amount_mismatch: bool | None = None
    override_rate_min: float | None = None
    budget_exceeded: str | None = None
    max_age_minutes: int | None = None  # waiting work this rule decided expires this long after it arrived
    # Risk triggers (see Facts) and, for on_the_loop, how much of the work people review after the fact.
    conflicting_record: bool | None = None  # another open proposal on the record, or it changed since the agent read it
    overrides_min: int | None = None  # people overrode the agent on this action at least this often recently
    burst_ratio_min: float | None = None  # the agent is proposing at least this many times its usual rate
    unusual_amount: bool | None = None  # the amount is above the agent's 99th percentile for the action
    first_actions: int | None = None  # the agent has made fewer than this many proposals for the action
    sample_percent: int | None = None  # on_the_loop only: the share sampled for review (None: all of it)


@dataclass(frozen=True)
class Budget:
    """A cap such as refunds per agent per day; usage is computed by the caller, the engine compares."""

    name: str
    metric: str  # "amount" (sum of amounts) or "count" (number of proposals)
    cap: Decimal
    window_minutes: int
    connectors: frozenset[str] | None = None
    actions: frozenset[str] | None = None
    agents: frozenset[str] | None = None


@dataclass(frozen=True)
class SwitchState:
    """An engaged kill switch. Checked at construction: a malformed switch must fail loudly, not be ignored."""

    scope: str  # "global", "connector", "action", "agent"
    value: str = ""
    mode: str = "force_review"  # "force_review" or "block"
    reason: str = ""

    def __post_init__(self) -> None:
        if self.scope not in SWITCH_SCOPES:
            raise ValueError(f"unknown kill switch scope {self.scope!r}")
        if self.mode not in SWITCH_MODES:
            raise ValueError(f"unknown kill switch mode {self.mode!r}")
        if (self.scope == "global") != (self.value == ""):
            raise ValueError("a global switch has no value; a scoped switch needs one")

    @property
    def where(self) -> str:
        """"global" or scope=value, as reasons and Decision.switches name it."""
        return "global" if self.scope == "global" else f"{self.scope}={self.value}"

    def describe(self) -> str:
        return f"{self.where}: {self.mode}"


@dataclass(frozen=True)
class MatrixTest:
    """An embedded test case: plain facts (as JSON/YAML gives them, amount as a string) and the expected result."""

    name: str
    facts: Mapping[str, Any]
    expect: str
    expect_rules: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MatrixSpec:
    """One version of the approval matrix, exactly as edited; `policies.engine.compile_matrix` makes it fast."""

    version: int
    name: str = "default"
    default_outcome: str = "review"
    default_tiers: tuple[Tier, ...] = ()
    rules: tuple[Rule, ...] = ()
    sensitive_fields: frozenset[str] = frozenset()
    required_facts: tuple[str, ...] = ()
    budgets: tuple[Budget, ...] = ()
    tests: tuple[MatrixTest, ...] = ()
    # How long work may wait for people before it expires (a rule's max_age_minutes overrides), and how
    # long a reviewer's question may wait for the agent's answer before the proposal expires.
    default_max_age_minutes: int = DEFAULT_MAX_AGE_MINUTES
    info_wait_minutes: int = DEFAULT_INFO_WAIT_MINUTES


# ---------------------------------------------------------------------------- conversions


def to_decimal(value: Any) -> Decimal:
    """A finite Decimal from a Decimal, int or numeric string; floats go through str() to stay exact-looking."""
    if isinstance(value, bool):
        raise ValueError("not a decimal")
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value) if isinstance(value, float) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"not a decimal: {value!r}") from None
    if not number.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return number


def _str_set(value: Any) -> frozenset[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError("not a list of strings")
    return frozenset(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError("not a number")
    return float(value)


def _optional_number(value: Any) -> float | None:
    return None if value is None else _number(value)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("not a string")
    return value


def _optional_decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float):
        raise ValueError("not a decimal (write it as a string, e.g. '100.00')")
    return to_decimal(value)


def _usage(value: Any) -> dict[str, Decimal]:
    if not isinstance(value, Mapping):
        raise ValueError("not a mapping of budget name to decimal")
    out = {}
    for name, used in value.items():
        if not isinstance(name, str):
            raise ValueError("budget names must be strings")
        try:
            out[name] = _optional_decimal(used)
        except ValueError as exc:
            raise MatrixError(name, str(exc)) from None
        if out[name] is None:
            raise MatrixError(name, "not a decimal")
    return out


def _count(value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise ValueError("not a whole number >= 0")
    return value


def _optional_count(value: Any) -> int | None:
    return None if value is None else _count(value)


def _impact(value: Any) -> str:
    if value not in IMPACTS:
        raise ValueError(f"not one of {', '.join(IMPACTS)}")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("not true or false")
    return value


def _optional_tier(value: Any) -> Tier | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("group"), str):
        raise ValueError("not a tier (a mapping with at least a group)")
    names = {f.name for f in fields(Tier)}
    try:
        return Tier(**{name: given for name, given in value.items() if name in names})
    except TypeError as exc:
        raise ValueError(str(exc)) from None


_FACT_PARSERS: dict[str, Callable[[Any], Any]] = {
    "connector": _string, "action": _string, "agent": _string, "target_type": _string,
    "amount": _optional_decimal, "currency": _string, "confidence": _number, "customer_impact": _impact,
    "fields": _str_set, "override_rate": _optional_number, "usage": _usage, "present": _str_set,
    "preview_failed": _flag, "human_edit": _optional_tier, "review_required": _flag,
    "amount_mismatch": _flag, "sensitive": _str_set, "read_only": _flag,
    "open_on_record": _count, "record_changed": _str_set, "overrides": _optional_count,
    "burst_ratio": _optional_number, "amount_p99": _optional_decimal, "prior_actions": _optional_count,
    "sample_point": _optional_number,
}


def facts_from_dict(data: Mapping[str, Any]) -> Facts:
    """Facts from plain data (an embedded test case, an API payload); errors name the fact."""
    if not isinstance(data, Mapping):
        raise MatrixError("", "facts must be a mapping")
    kwargs = {}
    for name, value in data.items():
        parse = _FACT_PARSERS.get(name)
        if parse is None:
            raise MatrixError(str(name), f"unknown fact (known: {', '.join(FACT_NAMES)})")
        try:
            kwargs[name] = parse(value)
        except MatrixError as exc:
            raise exc.within(name) from None
        except ValueError as exc:
            raise MatrixError(name, str(exc)) from None
    for name in ("connector", "action", "agent"):
        if name not in kwargs:
            raise MatrixError(name, "required")
    try:
        return Facts(**kwargs)
    except ValueError as exc:  # every field was checked above; this is a safety net so callers see one error type
        raise MatrixError("", str(exc)) from None


# ---------------------------------------------------------------------------- validation


class _Errors:
    """Collects errors with their paths, so validate() reports all of them, not just the first."""

    def __init__(self) -> None:
        self.items: list[MatrixError] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(MatrixError(path, message))

    def check(self, ok: bool, path: str, message: str) -> bool:
        if not ok:
            self.add(path, message)
        return ok


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _is_decimal(value: Any) -> bool:
    return isinstance(value, Decimal) and value.is_finite()


def _is_name_set(value: Any) -> bool:
    return isinstance(value, frozenset) and all(isinstance(v, str) and v for v in value)


def _is_slug(value: Any) -> bool:
    return isinstance(value, str) and _SLUG.fullmatch(value) is not None


def validate(spec: MatrixSpec) -> list[MatrixError]:
    """Every problem of a matrix, each with the path of the field at fault. Empty means usable."""
    errors = _Errors()
    if not isinstance(spec, MatrixSpec):
        errors.add("", "not a MatrixSpec")
        return errors.items
    errors.check(_is_int(spec.version) and spec.version >= 1, "version", "must be an integer >= 1")
    errors.check(isinstance(spec.name, str) and spec.name != "", "name", "must be a non-empty string")
    _validate_default(spec, errors)
    errors.check(_is_name_set(spec.sensitive_fields), "sensitive_fields", "must be a set of non-empty strings")
    _validate_required_facts(spec.required_facts, errors)
    budget_names = _validate_budgets(spec.budgets, errors)
    rule_names = _validate_rules(spec, budget_names, errors)
    _validate_tests(spec.tests, rule_names, errors)
    return errors.items


def _validate_default(spec: MatrixSpec, errors: _Errors) -> None:
    if not errors.check(spec.default_outcome in OUTCOMES, "default_outcome", f"must be one of {', '.join(OUTCOMES)}"):
        return
    if not _validate_tiers(spec.default_tiers, "default_tiers", errors):
        return
    can_be_auto = spec.default_outcome == "auto" or any(getattr(r, "outcome", None) == "auto" for r in spec.rules)
    for name in ("default_max_age_minutes", "info_wait_minutes"):
        errors.check(_is_int(getattr(spec, name)) and getattr(spec, name) >= 1, name, "must be an integer >= 1")
    if spec.default_outcome in PEOPLE_OUTCOMES:
        errors.check(bool(spec.default_tiers), "default_tiers", f"required when default_outcome is {spec.default_outcome}")
    elif can_be_auto:
        # A force_review kill switch turns auto into review and needs somebody to send it to.
        errors.check(
            bool(spec.default_tiers), "default_tiers", "required when auto is possible (force_review switches use them)"
        )


def _validate_tiers(tiers: Any, path: str, errors: _Errors) -> bool:
    if not errors.check(isinstance(tiers, tuple), path, "must be a tuple of tiers"):
        return False
    seen: set[str] = set()
    for i, tier in enumerate(tiers):
        at = f"{path}[{i}]"
        if not errors.check(isinstance(tier, Tier), at, "not a Tier"):
            continue
        if errors.check(isinstance(tier.group, str) and tier.group != "", f"{at}.group", "must be a non-empty string"):
            errors.check(tier.group not in seen, f"{at}.group", f"duplicate group {tier.group}")
            seen.add(tier.group)
        errors.check(_is_int(tier.required) and tier.required >= 1, f"{at}.required", "must be an integer >= 1")
        errors.check(tier.mode in TIER_MODES, f"{at}.mode", f"must be one of {', '.join(TIER_MODES)}")
        errors.check(_is_int(tier.sla_minutes) and tier.sla_minutes >= 1, f"{at}.sla_minutes", "must be an integer >= 1")
        errors.check(isinstance(tier.escalation_group, str), f"{at}.escalation_group", "must be a string")
        errors.check(isinstance(tier.bulk_allowed, bool), f"{at}.bulk_allowed", "must be true or false")
        errors.check(_finite(tier.remind_at) and 0 <= tier.remind_at < 1, f"{at}.remind_at",
                     "must be a number from 0 (no reminder) to below 1 (a fraction of the SLA)")
        errors.check(isinstance(tier.signed_links, bool), f"{at}.signed_links", "must be true or false")
    return True


def _validate_required_facts(names: Any, errors: _Errors) -> None:
    if not errors.check(isinstance(names, tuple), "required_facts", "must be a tuple of names"):
        return
    for i, name in enumerate(names):
        errors.check(isinstance(name, str) and name != "", f"required_facts[{i}]", "must be a non-empty string")
    errors.check(len(set(names)) == len(names), "required_facts", "duplicate names")


def _validate_budgets(budgets: Any, errors: _Errors) -> set[str]:
    names: set[str] = set()
    if not errors.check(isinstance(budgets, tuple), "budgets", "must be a tuple of budgets"):
        return names
    for i, budget in enumerate(budgets):
        at = f"budgets[{i}]"
        if not errors.check(isinstance(budget, Budget), at, "not a Budget"):
            continue
        if errors.check(_is_slug(budget.name), f"{at}.name", "must be a slug (letters, digits, - and _)"):
            errors.check(budget.name not in names, f"{at}.name", f"duplicate budget name {budget.name}")
            names.add(budget.name)
        errors.check(budget.metric in BUDGET_METRICS, f"{at}.metric", f"must be one of {', '.join(BUDGET_METRICS)}")
        errors.check(_is_decimal(budget.cap) and budget.cap >= 0, f"{at}.cap", "must be a decimal >= 0")
        window_ok = _is_int(budget.window_minutes) and budget.window_minutes >= 1
        errors.check(window_ok, f"{at}.window_minutes", "must be an integer >= 1")
        for attr in ("connectors", "actions", "agents"):
            value = getattr(budget, attr)
            errors.check(value is None or _is_name_set(value), f"{at}.{attr}", "must be a set of non-empty strings")
    return names


def _validate_rules(spec: MatrixSpec, budget_names: set[str], errors: _Errors) -> set[str]:
    names: set[str] = set()
    if not errors.check(isinstance(spec.rules, tuple), "rules", "must be a tuple of rules"):
        return names
    for i, rule in enumerate(spec.rules):
        at = f"rules[{i}]"
        if not errors.check(isinstance(rule, Rule), at, "not a Rule"):
            continue
        if errors.check(_is_slug(rule.name), f"{at}.name", "must be a slug (letters, digits, - and _)"):
            errors.check(rule.name != DEFAULT_RULE, f"{at}.name", f"'{DEFAULT_RULE}' is reserved for the matrix default")
            errors.check(rule.name not in names, f"{at}.name", f"duplicate rule name {rule.name}")
            names.add(rule.name)
        errors.check(isinstance(rule.description, str), f"{at}.description", "must be a string")
        _validate_rule_outcome(rule, at, errors)
        _validate_rule_conditions(rule, at, spec, budget_names, errors)
        errors.check(rule.max_age_minutes is None or (_is_int(rule.max_age_minutes) and rule.max_age_minutes >= 1),
                     f"{at}.max_age_minutes", "must be an integer >= 1 (or absent: the matrix default)")
    return names


def _validate_rule_outcome(rule: Rule, at: str, errors: _Errors) -> None:
    if not errors.check(rule.outcome in OUTCOMES, f"{at}.outcome", f"must be one of {', '.join(OUTCOMES)}"):
        return
    if not _validate_tiers(rule.tiers, f"{at}.tiers", errors):
        return
    if rule.outcome in PEOPLE_OUTCOMES:
        errors.check(bool(rule.tiers), f"{at}.tiers", f"required when outcome is {rule.outcome}")
    else:
        errors.check(not rule.tiers, f"{at}.tiers",
                     f"only a review rule (or on_the_loop, assisted) has tiers (outcome is {rule.outcome})")
    if rule.sample_percent is not None:
        ok = _is_int(rule.sample_percent) and 1 <= rule.sample_percent <= 100
        if errors.check(ok, f"{at}.sample_percent", "must be a whole number from 1 to 100"):
            errors.check(rule.outcome == "on_the_loop", f"{at}.sample_percent",
                         f"only an on_the_loop rule samples its work (outcome is {rule.outcome})")


def _validate_rule_conditions(rule: Rule, at: str, spec: MatrixSpec, budget_names: set[str], errors: _Errors) -> None:
    for attr in ("connectors", "actions", "agents", "target_types", "fields_any"):
        value = getattr(rule, attr)
        errors.check(value is None or _is_name_set(value), f"{at}.{attr}", "must be a set of non-empty strings")
    if rule.impacts is not None and errors.check(_is_name_set(rule.impacts), f"{at}.impacts", "must be a set of impacts"):
        unknown = sorted(rule.impacts - set(IMPACTS))
        errors.check(not unknown, f"{at}.impacts", f"unknown impact {', '.join(unknown)} (known: {', '.join(IMPACTS)})")
    _validate_amount(rule, at, errors)
    _validate_range(rule.confidence_min, rule.confidence_max, f"{at}.confidence", errors)
    if rule.override_rate_min is not None:
        errors.check(_is_number(rule.override_rate_min) and 0 <= rule.override_rate_min <= 1,
                     f"{at}.override_rate_min", "must be a number between 0 and 1")
    if rule.touches_sensitive is not None and not isinstance(rule.touches_sensitive, bool):
        errors.add(f"{at}.touches_sensitive", "must be true or false")
    if rule.amount_mismatch is not None and not isinstance(rule.amount_mismatch, bool):
        errors.add(f"{at}.amount_mismatch", "must be true or false")
    _validate_flag(rule.missing_facts, f"{at}.missing_facts", spec.required_facts, "required_facts", errors)
    if rule.budget_exceeded is not None:
        known = rule.budget_exceeded in budget_names
        errors.check(known, f"{at}.budget_exceeded", f"unknown budget {rule.budget_exceeded!r}")
    _validate_risk_conditions(rule, at, errors)


def _validate_risk_conditions(rule: Rule, at: str, errors: _Errors) -> None:
    for attr in ("conflicting_record", "unusual_amount"):
        value = getattr(rule, attr)
        errors.check(value is None or isinstance(value, bool), f"{at}.{attr}", "must be true or false")
    for attr in ("overrides_min", "first_actions"):
        value = getattr(rule, attr)
        errors.check(value is None or (_is_int(value) and value >= 1), f"{at}.{attr}", "must be a whole number >= 1")
    if rule.burst_ratio_min is not None:
        errors.check(_is_number(rule.burst_ratio_min) and rule.burst_ratio_min > 0,
                     f"{at}.burst_ratio_min", "must be a number > 0")


def _validate_amount(rule: Rule, at: str, errors: _Errors) -> None:
    bounds_ok = True
    for attr in ("amount_min", "amount_max"):
        value = getattr(rule, attr)
        bounds_ok &= errors.check(value is None or _is_decimal(value), f"{at}.{attr}", "not a decimal")
    has_bounds = rule.amount_min is not None or rule.amount_max is not None
    if rule.currency is not None:
        errors.check(isinstance(rule.currency, str) and _CURRENCY.fullmatch(rule.currency) is not None,
                     f"{at}.currency", "must be a 3-letter ISO 4217 code in capitals")
        errors.check(has_bounds, f"{at}.currency", "given without amount_min or amount_max")
    elif has_bounds:
        errors.add(f"{at}.currency", "required with amount_min or amount_max (amounts are compared in one currency)")
    if bounds_ok and rule.amount_min is not None and rule.amount_max is not None:
        ordered = rule.amount_min < rule.amount_max
        errors.check(ordered, f"{at}.amount_min", "must be below amount_max (the range is [min, max))")


def _validate_range(low: Any, high: Any, path: str, errors: _Errors) -> None:
    ok = True
    for value, suffix in ((low, "_min"), (high, "_max")):
        if value is not None:
            ok &= errors.check(_is_number(value) and 0 <= value <= 1, path + suffix, "must be a number between 0 and 1")
    if ok and low is not None and high is not None:
        errors.check(low < high, path + "_min", f"must be below {path.rsplit('.', 1)[-1]}_max (the range is [min, max))")


def _validate_flag(value: Any, path: str, usable: Any, needs: str, errors: _Errors) -> None:
    if value is None:
        return
    if errors.check(isinstance(value, bool), path, "must be true, false or absent"):
        errors.check(bool(usable), path, f"the matrix has no {needs}, so this condition cannot mean anything")


def _validate_tests(tests: Any, rule_names: set[str], errors: _Errors) -> None:
    if not errors.check(isinstance(tests, tuple), "tests", "must be a tuple of test cases"):
        return
    seen: set[str] = set()
    for i, case in enumerate(tests):
        at = f"tests[{i}]"
        if not errors.check(isinstance(case, MatrixTest), at, "not a MatrixTest"):
            continue
        if errors.check(isinstance(case.name, str) and case.name != "", f"{at}.name", "must be a non-empty string"):
            errors.check(case.name not in seen, f"{at}.name", f"duplicate test name {case.name}")
            seen.add(case.name)
        errors.check(case.expect in OUTCOMES, f"{at}.expect", f"must be one of {', '.join(OUTCOMES)}")
        _validate_test_facts(case.facts, f"{at}.facts", errors)
        if case.expect_rules is not None and errors.check(
            isinstance(case.expect_rules, tuple), f"{at}.expect_rules", "must be a tuple of rule names"
        ):
            known = rule_names | {DEFAULT_RULE}
            unknown = [str(n) for n in case.expect_rules if n not in known]
            errors.check(not unknown, f"{at}.expect_rules", f"unknown rule {', '.join(unknown)}")


def _validate_test_facts(facts: Any, path: str, errors: _Errors) -> None:
    """Test facts stay plain data (what YAML/JSON give) so a matrix round-trips through text unchanged."""
    if not errors.check(_is_plain(facts) and isinstance(facts, dict), path, "must be a mapping of plain values"):
        return
    try:
        facts_from_dict(facts)
    except MatrixError as exc:
        errors.items.append(exc.within(path))


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


# ---------------------------------------------------------------------------- diffs


def _plain(value: Any) -> Any:
    """JSON-ready view of a spec value, for diffs."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, (Tier, Budget, MatrixTest)):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _field_changes(old: Any, new: Any, skip: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    return {
        f.name: [_plain(getattr(old, f.name)), _plain(getattr(new, f.name))]
        for f in fields(new)
        if f.name not in skip and getattr(old, f.name) != getattr(new, f.name)
    }


def _set_fields(obj: Any, removed: bool) -> dict[str, list[Any]]:
    """The non-default attributes of an added or removed object, as [old, new] pairs."""
    out = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name != "name" and value != f.default and value != () and value != frozenset():
            out[f.name] = [_plain(value), None] if removed else [None, _plain(value)]
    return out


def diff_specs(old: MatrixSpec, new: MatrixSpec) -> list[dict[str, Any]]:
    """What changed between two versions: matrix settings, budgets, then rules (new order, removed last).

    Rule entries: {"rule", "change": added|removed|changed|moved, "fields": {attr: [old, new]}};
    a rule whose place among the kept rules changed carries "position": [old index, new index].
    Settings and budgets entries have "rule": None and say which "setting" (e.g. "budgets.refunds").
    """
    changes = _setting_changes(old, new) + _budget_changes(old, new)
    return changes + _rule_changes(old, new)


def _setting(setting: str, change: str, changed: dict[str, list[Any]]) -> dict[str, Any]:
    return {"rule": None, "setting": setting, "change": change, "fields": changed}


def _setting_changes(old: MatrixSpec, new: MatrixSpec) -> list[dict[str, Any]]:
    out = []
    for attr in ("name", "default_outcome", "default_tiers", "sensitive_fields", "required_facts", "tests",
                 "default_max_age_minutes", "info_wait_minutes"):
        before, after = getattr(old, attr), getattr(new, attr)
        if before != after:
            out.append(_setting(attr, "changed", {attr: [_plain(before), _plain(after)]}))
    return out


def _budget_changes(old: MatrixSpec, new: MatrixSpec) -> list[dict[str, Any]]:
    before, after = {b.name: b for b in old.budgets}, {b.name: b for b in new.budgets}
    out = []
    for name, budget in after.items():
        if name not in before:
            out.append(_setting(f"budgets.{name}", "added", _set_fields(budget, removed=False)))
        elif before[name] != budget:
            out.append(_setting(f"budgets.{name}", "changed", _field_changes(before[name], budget)))
    out += [_setting(f"budgets.{n}", "removed", _set_fields(b, removed=True)) for n, b in before.items() if n not in after]
    return out


def _rule_changes(old: MatrixSpec, new: MatrixSpec) -> list[dict[str, Any]]:
    before = {r.name: (i, r) for i, r in enumerate(old.rules)}
    after = {r.name: (i, r) for i, r in enumerate(new.rules)}
    stayed = _kept_in_order([r.name for r in old.rules if r.name in after], [r.name for r in new.rules if r.name in before])
    out = []
    for name, (position, rule) in after.items():
        if name not in before:
            added = {"position": [None, position], **_set_fields(rule, removed=False)}
            out.append({"rule": name, "change": "added", "fields": added})
            continue
        old_position, old_rule = before[name]
        changed = _field_changes(old_rule, rule, skip=("name",))
        if name not in stayed:
            changed["position"] = [old_position, position]
        if changed:
            out.append({"rule": name, "change": "moved" if list(changed) == ["position"] else "changed", "fields": changed})
    for name, (position, rule) in before.items():
        if name not in after:
            removed = {"position": [position, None], **_set_fields(rule, removed=True)}
            out.append({"rule": name, "change": "removed", "fields": removed})
    return out


def _kept_in_order(old_names: list[str], new_names: list[str]) -> set[str]:
    """The rules that kept their relative order (a longest common subsequence); the others moved."""
    matcher = difflib.SequenceMatcher(None, old_names, new_names, autojunk=False)
    return {name for block in matcher.get_matching_blocks() for name in old_names[block.a:block.a + block.size]}
