"""The decision engine: which outcome a proposal gets, and why. Pure Python, no Django, no database.

A decision is a function of three inputs only: the proposal's `Facts`, a `CompiledMatrix`
and the engaged kill switches. The caller (the Django side) gathers the facts, including
budget usage for the budgets `applicable_budgets` names, and stores the `Decision`.

Semantics
---------
Matching
    A rule matches when all of its given conditions hold (AND); an absent (None) or empty
    condition means "any", and "*" in a name set (connectors, actions, agents, target_types)
    means any too. Conditions are data compared with `in`, `<`, `>=`: user text is never
    evaluated. Amounts are Decimals; a rule with an amount range applies in its currency only,
    so it does not match a proposal without an amount or in another currency. Ranges are
    half-open: `*_min` inclusive, `*_max` exclusive.

Conflicts
    Every rule is considered and the strictest outcome among ALL matching rules wins
    (block > triage > assisted > review > on_the_loop > auto); rule order never lets a lenient rule
    shadow a strict one. If an outcome with people wins (review; assisted, whose tiers receive the
    recommendation; on_the_loop, whose tiers review after the fact), the tiers of all its matching rules are combined (`combine_tiers`):
    one tier per group in first-appearance order (rule order), with the maximum `required`,
    "all" over "any", the minimum SLA, bulk approval only if every rule allows it, and the
    first non-empty escalation group. Decision.rules names the winning rules; when none
    matches, the matrix default applies (default_outcome, default_tiers if it is review)
    and Decision.rules is ("default",).

On the loop
    An on_the_loop decision runs at once; `Decision.sampled` says whether people review it
    after the fact: the deciding rules' largest sample_percent (none given: all), compared with
    the proposal's fixed `sample_point`, so a simulation replays the same sample.

Risk triggers
    conflicting_record, overrides_min, burst_ratio_min, unusual_amount and first_actions are
    conditions on facts the caller computes (`approvals.risk`); each explains itself in the trace.

Kill switches
    A switch applies when its scope is global, or its value equals the proposal's connector,
    action or agent (per its scope). An applicable "block" switch makes the outcome block.
    An applicable "force_review" switch makes it at least review: auto becomes review with
    the combined tiers of the matching review rules, or else the default tiers; on_the_loop
    becomes review by its own tiers; review, assisted, triage and block stay. Decision.rules still names what the matrix decided; the switches
    that applied are in Decision.switches and in the reasons.

Monotonicity (tests/test_policy_monotonic.py proves these with hypothesis)
    * Engaging a switch never makes a decision less strict.
    * Adding a rule, anywhere, never makes a decision that rules made less strict: the outcome
      never drops and, review to review, every tier group stays with at least its quorum
      (and "all" mode, and at most its SLA). The same holds for the default path when the
      added rule is stricter than the default, and for any added rule when the default is auto.
    * The one exception is inherent to a default: a proposal that no rule matched gets the
      default, and an added rule that matches it (say an auto rule under a review default)
      decides it instead, and alone. Relaxing is therefore always explicit and attributable:
      Decision.rules names the rule that did it.
    * With switches engaged, adding a rule still never lowers the outcome; but when a
      force_review switch had sent an auto decision to the default tiers, an added matching
      review rule's own tiers take their place (review is then the rules' verdict, which
      force_review leaves as it is).

Trace
    Decision.trace explains the decision in time that does not grow with the matrix. The index
    files rules under every equality field they name (connector, action, agent, target type,
    currency, customer impact); each rule it admits for the proposal gets an entry, in matrix
    order, with what held or its first failing condition ("amount 120.00 USD < 1000"). The rules
    it skipped are counted by group, one entry per field that excluded them, taken in that
    order ("412 rules name another agent"), from bitmasks of the index, never walked one by one.
    The trace is lazy: decide() records what it learnt and the words are written on first read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from decimal import Decimal
from itertools import product
from operator import attrgetter, itemgetter
from typing import Any, ClassVar, overload

from policies.matrix_spec import (
    DEFAULT_RULE,
    FACT_NAMES,
    IMPACTS,
    OUTCOMES,
    PEOPLE_OUTCOMES,
    RUNS_ALONE,
    WILDCARD,
    Budget,
    Facts,
    MatrixError,
    MatrixSpec,
    MatrixTest,
    Rule,
    SwitchState,
    Tier,
    diff_specs,
    facts_from_dict,
    validate,
)

__all__ = [
    "OUTCOMES", "PEOPLE_OUTCOMES", "RUNS_ALONE", "IMPACTS", "RANK", "Facts", "Tier", "Rule", "Budget", "SwitchState", "MatrixTest", "MatrixSpec",
    "TraceEntry", "SkippedRules", "Trace", "Decision", "MatrixError", "CompiledMatrix", "validate", "compile_matrix", "decide",
    "applicable_budgets", "run_tests", "diff_specs", "combine_tiers", "at_least_as_strict", "facts_from_dict",
    "FALLBACK_TIERS", "review_floor", "switch_applies", "tier_as_dict",
]

RANK = {outcome: rank for rank, outcome in enumerate(OUTCOMES)}
INDEX_LIMIT = 4096  # max index entries per rule; beyond it a dimension is checked per decision instead


@dataclass(frozen=True, slots=True)
class TraceEntry:
    """One rule the index admitted: whether it matched, with what held or the first condition that failed."""

    rule: str
    matched: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "matched": self.matched, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class SkippedRules:
    """Rules the index left out for one reason, counted rather than listed: "412 rules name another agent"."""

    field: str  # the dimension that excluded them ("agent", "currency", ...)
    count: int
    reason: str
    rule: ClassVar[str] = ""  # read like a TraceEntry: no one rule, none of them matched
    matched: ClassVar[bool] = False

    def as_dict(self) -> dict[str, Any]:
        return {"skipped": self.count, "field": self.field, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome for one proposal, with everything needed to explain it later."""

    outcome: str
    matrix_version: int
    rules: tuple[str, ...]
    reasons: tuple[str, ...]
    tiers: tuple[Tier, ...]
    trace: Sequence[TraceEntry | SkippedRules]  # a tuple, or a lazy Trace that equals the tuple it materialises
    switches: tuple[str, ...] = ()
    max_age_minutes: int | None = None  # waiting longer than this after arrival, the work expires (None: never)
    info_wait_minutes: int | None = None  # how long a reviewer's question may wait for the agent
    sampled: bool | None = None  # on_the_loop only: whether people review this one after it ran

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored with the proposal."""
        stored = {
            "outcome": self.outcome,
            "matrix_version": self.matrix_version,
            "rule": self.rules[0] if self.rules else DEFAULT_RULE,
            "rules": list(self.rules),
            "reasons": list(self.reasons),
            "tiers": [tier_as_dict(t) for t in self.tiers],
            "trace": [entry.as_dict() for entry in self.trace],  # compact at any matrix size: skips are counted
            "switches": list(self.switches),
            "max_age_minutes": self.max_age_minutes,
            "info_wait_minutes": self.info_wait_minutes,
        }
        if self.sampled is not None:
            stored["sampled"] = self.sampled
        return stored


def tier_as_dict(tier: Tier) -> dict[str, Any]:
    return {f.name: getattr(tier, f.name) for f in fields(Tier)}


# ---------------------------------------------------------------------------- conditions
# Each condition answers holds(facts) fast (decide) and explain(facts) in words (reasons, trace).


def _listing(values: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(values)) + "]"


def _num(value: float) -> str:
    """Shortest exact form (0.95, not 0.950000): a rounded number could contradict its own comparison."""
    return str(value)


def _bounds(low: Any, high: Any, show: Callable[[Any], str]) -> str:
    """The held half of a [low, high) range: ">= 100", "< 1000" or ">= 100 and < 1000"."""
    held = ([f">= {show(low)}"] if low is not None else []) + ([f"< {show(high)}"] if high is not None else [])
    return " and ".join(held)


class _Member:
    """A fact value must be one of a set (connector, action, agent, target type, impact).

    For connector, action and agent (show_miss=False) the failure text leaves out the proposal's
    value ("connector not in [crm]"): the trace shows it only for a rule too wide to index on
    that field, whose text then reads the same for every proposal.
    """

    __slots__ = ("label", "get", "values", "suffix_in", "suffix_out", "show_miss")

    def __init__(self, label: str, attr: str, values: frozenset[str], show_miss: bool = True) -> None:
        self.label, self.get, self.values, self.show_miss = label, attrgetter(attr), values, show_miss
        self.suffix_in, self.suffix_out = " in " + _listing(values), " not in " + _listing(values)

    def holds(self, facts: Facts) -> bool:
        return self.get(facts) in self.values

    def miss_text(self, value: str = "") -> str:
        shown = f" {value or '(none)'}" if self.show_miss else ""
        return f"{self.label}{shown}{self.suffix_out}"

    def explain(self, facts: Facts) -> tuple[bool, str]:
        value = self.get(facts)
        if value in self.values:
            return True, f"{self.label} {value}{self.suffix_in}"
        return False, self.miss_text(value)


class _Amount:
    """Amount in [min, max) in one currency; no amount or another currency never matches."""

    __slots__ = ("currency", "low", "high")

    def __init__(self, currency: str, low: Decimal | None, high: Decimal | None) -> None:
        self.currency, self.low, self.high = currency, low, high

    def holds(self, facts: Facts) -> bool:
        amount = facts.amount
        return (
            amount is not None
            and facts.currency.upper() == self.currency
            and (self.low is None or amount >= self.low)
            and (self.high is None or amount < self.high)
        )

    def explain(self, facts: Facts) -> tuple[bool, str]:
        amount, cur = facts.amount, self.currency
        if amount is None:
            return False, f"no amount (rule applies to {cur} amounts)"
        if facts.currency.upper() != cur:
            return False, f"currency {facts.currency or '(none)'} is not {cur}"
        if self.low is not None and amount < self.low:
            return False, f"amount {amount} {cur} < {self.low}"
        if self.high is not None and amount >= self.high:
            return False, f"amount {amount} {cur} >= {self.high}"
        return True, f"amount {amount} {cur} {_bounds(self.low, self.high, str)}"


class _Confidence:
    __slots__ = ("low", "high")

    def __init__(self, low: float | None, high: float | None) -> None:
        self.low, self.high = low, high

    def holds(self, facts: Facts) -> bool:
        value = facts.confidence
        return (self.low is None or value >= self.low) and (self.high is None or value < self.high)

    def explain(self, facts: Facts) -> tuple[bool, str]:
        value = facts.confidence
        if self.low is not None and value < self.low:
            return False, f"confidence {_num(value)} < {_num(self.low)}"
        if self.high is not None and value >= self.high:
            return False, f"confidence {_num(value)} >= {_num(self.high)}"
        return True, f"confidence {_num(value)} {_bounds(self.low, self.high, _num)}"


class _FieldsAny:
    __slots__ = ("values",)

    def __init__(self, values: frozenset[str]) -> None:
        self.values = values

    def holds(self, facts: Facts) -> bool:
        return not self.values.isdisjoint(facts.fields)

    def explain(self, facts: Facts) -> tuple[bool, str]:
        touched = self.values & facts.fields
        if touched:
            return True, "touches " + ", ".join(sorted(touched))
        return False, "touches none of " + _listing(self.values)


class _Sensitive:
    """touches_sensitive: True matches changes touching a sensitive field, False those that don't."""

    __slots__ = ("sensitive", "want")

    def __init__(self, sensitive: frozenset[str], want: bool) -> None:
        self.sensitive, self.want = sensitive, want

    def holds(self, facts: Facts) -> bool:
        return bool(facts.sensitive or not self.sensitive.isdisjoint(facts.fields)) == self.want

    def explain(self, facts: Facts) -> tuple[bool, str]:
        touched = (self.sensitive & facts.fields) | facts.sensitive  # the matrix's list and the connector's
        text = "touches sensitive fields " + ", ".join(sorted(touched)) if touched else "touches no sensitive field"
        return bool(touched) == self.want, text


class _AmountMismatch:
    """amount_mismatch: True matches a declared amount that differs from the money the change carries."""

    __slots__ = ("want",)

    def __init__(self, want: bool) -> None:
        self.want = want

    def holds(self, facts: Facts) -> bool:
        return facts.amount_mismatch == self.want

    def explain(self, facts: Facts) -> tuple[bool, str]:
        text = ("the declared amount differs from the money in the change" if facts.amount_mismatch
                else "the declared amount agrees with the change")
        return facts.amount_mismatch == self.want, text


def _present_check(name: str) -> Callable[[Facts], bool]:
    """A required fact is present if the integration said so, or the Facts attribute of that name has a value."""
    if name not in FACT_NAMES:
        return lambda facts: name in facts.present
    get = attrgetter(name)

    def check(facts: Facts) -> bool:
        if name in facts.present:
            return True
        value = get(facts)
        return value is not None and value != "" and not (isinstance(value, (frozenset, Mapping)) and not value)

    return check


class _MissingFacts:
    __slots__ = ("checks", "want")

    def __init__(self, required: tuple[str, ...], want: bool) -> None:
        self.checks, self.want = tuple((n, _present_check(n)) for n in required), want

    def missing(self, facts: Facts) -> list[str]:
        return [name for name, present in self.checks if not present(facts)]

    def holds(self, facts: Facts) -> bool:
        return any(not present(facts) for _, present in self.checks) == self.want

    def explain(self, facts: Facts) -> tuple[bool, str]:
        missing = self.missing(facts)
        text = "missing required facts: " + ", ".join(missing) if missing else "all required facts present"
        return bool(missing) == self.want, text


class _OverrideRate:
    __slots__ = ("low",)

    def __init__(self, low: float) -> None:
        self.low = low

    def holds(self, facts: Facts) -> bool:
        rate = facts.override_rate
        return rate is not None and rate >= self.low

    def explain(self, facts: Facts) -> tuple[bool, str]:
        rate = facts.override_rate
        if rate is None:
            return False, "no override rate known for the agent"
        sign = ">=" if rate >= self.low else "<"
        return rate >= self.low, f"override rate {_num(rate)} {sign} {_num(self.low)}"


class _BudgetExceeded:
    __slots__ = ("name", "cap")

    def __init__(self, name: str, cap: Decimal) -> None:
        self.name, self.cap = name, cap

    def holds(self, facts: Facts) -> bool:
        used = facts.usage.get(self.name)
        return used is not None and used > self.cap

    def explain(self, facts: Facts) -> tuple[bool, str]:
        used = facts.usage.get(self.name)
        if used is None:
            return False, f"no usage given for budget {self.name}"
        sign = ">" if used > self.cap else "<="
        return used > self.cap, f"budget {self.name} used {used} {sign} cap {self.cap}"


# ---- risk triggers: conflicting records, repeated overrides, unusual behaviour, a new agent

class _ConflictingRecord:
    """conflicting_record: another open proposal touches the record, or it changed since the agent read it."""

    __slots__ = ("want",)

    def __init__(self, want: bool) -> None:
        self.want = want

    def holds(self, facts: Facts) -> bool:
        return bool(facts.open_on_record or facts.record_changed) == self.want

    def explain(self, facts: Facts) -> tuple[bool, str]:
        said = []
        if facts.open_on_record:
            said.append(f"{facts.open_on_record} other open proposal(s) on this record")
        if facts.record_changed:
            said.append("the record changed since the agent read it: " + ", ".join(sorted(facts.record_changed)))
        return self.holds(facts), "; ".join(said) or "no conflicting record"


class _AtLeast:
    """A whole-number or ratio fact at or above a threshold; an unknown value (None) never matches."""

    __slots__ = ("get", "low", "label", "unknown")

    def __init__(self, attr: str, low: float, label: str, unknown: str) -> None:
        self.get, self.low, self.label, self.unknown = attrgetter(attr), low, label, unknown

    def holds(self, facts: Facts) -> bool:
        value = self.get(facts)
        return value is not None and value >= self.low

    def explain(self, facts: Facts) -> tuple[bool, str]:
        value = self.get(facts)
        if value is None:
            return False, self.unknown
        sign = ">=" if value >= self.low else "<"
        return value >= self.low, f"{self.label} {_num(value)} {sign} {_num(self.low)}"


class _UnusualAmount:
    """unusual_amount: True matches an amount above the agent's 99th percentile for the action."""

    __slots__ = ("want",)

    def __init__(self, want: bool) -> None:
        self.want = want

    @staticmethod
    def _unusual(facts: Facts) -> bool:
        return facts.amount is not None and facts.amount_p99 is not None and facts.amount > facts.amount_p99

    def holds(self, facts: Facts) -> bool:
        return self._unusual(facts) == self.want

    def explain(self, facts: Facts) -> tuple[bool, str]:
        if facts.amount is None or facts.amount_p99 is None:
            text = "no amount" if facts.amount is None else "too little history for a 99th percentile"
        else:
            sign = ">" if self._unusual(facts) else "<="
            text = f"amount {facts.amount} {sign} the agent's 99th percentile {facts.amount_p99}"
        return self.holds(facts), text


class _FirstActions:
    """first_actions: N matches while the agent has made fewer than N proposals for the action."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def holds(self, facts: Facts) -> bool:
        return facts.prior_actions is not None and facts.prior_actions < self.limit

    def explain(self, facts: Facts) -> tuple[bool, str]:
        if facts.prior_actions is None:
            return False, "no count of the agent's earlier actions"
        sign = "<" if self.holds(facts) else ">="
        return self.holds(facts), f"the agent's earlier {facts.action} proposals {facts.prior_actions} {sign} {self.limit}"


def _risk_conditions(rule: Rule) -> Iterator[_ConflictingRecord | _AtLeast | _UnusualAmount | _FirstActions]:
    """The risk-trigger conditions of a rule, in Rule field order (after the older conditions)."""
    if rule.conflicting_record is not None:
        yield _ConflictingRecord(rule.conflicting_record)
    if rule.overrides_min is not None:
        yield _AtLeast("overrides", rule.overrides_min, "recent overrides on this action",
                       "no override count known for the agent")
    if rule.burst_ratio_min is not None:
        yield _AtLeast("burst_ratio", rule.burst_ratio_min, "proposal rate x usual",
                       "no usual rate known for the agent")
    if rule.unusual_amount is not None:
        yield _UnusualAmount(rule.unusual_amount)
    if rule.first_actions is not None:
        yield _FirstActions(rule.first_actions)


_Condition = (_Member | _Amount | _Confidence | _FieldsAny | _Sensitive | _MissingFacts | _OverrideRate | _BudgetExceeded
              | _ConflictingRecord | _AtLeast | _UnusualAmount | _FirstActions)


def _names_or_any(values: frozenset[str] | None) -> frozenset[str] | None:
    """None when a name set means "any" (absent, empty or containing "*")."""
    return None if not values or WILDCARD in values else values


# ---------------------------------------------------------------------------- compiled rules


@dataclass(frozen=True, slots=True)
class _Dimension:
    """A rule field the index sorts rules by: a proposal matches it only on an equal value.

    `label` is the trace's (and the _Member condition's) name for it, `names` reads a rule's
    values (None: any), `value` the proposal's.
    """

    label: str
    names: Callable[[Rule], frozenset[str] | None]
    value: Callable[[Facts], str]


def _currency_names(rule: Rule) -> frozenset[str] | None:
    return frozenset({rule.currency}) if rule.currency is not None else None


def _currency_value(facts: Facts) -> str:
    """A rule with a currency applies only to an amount in it: no amount is a value no rule names."""
    return facts.currency.upper() if facts.amount is not None else ""


# Every equality field a rule can name, in condition order. Ranges, thresholds and the other
# flags stay conditions: the index admits a handful of candidates, and those test the rest.
DIMENSIONS = (
    _Dimension("connector", lambda r: _names_or_any(r.connectors), attrgetter("connector")),
    _Dimension("action", lambda r: _names_or_any(r.actions), attrgetter("action")),
    _Dimension("agent", lambda r: _names_or_any(r.agents), attrgetter("agent")),
    _Dimension("target type", lambda r: _names_or_any(r.target_types), attrgetter("target_type")),
    _Dimension("currency", _currency_names, _currency_value),
    _Dimension("customer impact", lambda r: r.impacts or None, attrgetter("customer_impact")),
)
ROUTING = ("connector", "action", "agent")  # their miss text leaves out the proposal's own value (see _Member)


class _CompiledRule:
    """A rule turned into condition objects, plus its index keys.

    `checks` pairs each condition the index does not already guarantee with its bound test.
    `keys` holds, per dimension, the names the rule is filed under ([None]: any, or too wide
    to index, so its condition is checked instead).
    """

    __slots__ = ("index", "rule", "name", "outcome", "rank", "tiers", "conditions", "checks", "keys")

    def __init__(self, index: int, rule: Rule, spec: MatrixSpec, budgets: dict[str, Budget]) -> None:
        self.index, self.rule, self.name, self.outcome = index, rule, rule.name, rule.outcome
        self.rank, self.tiers = RANK[rule.outcome], rule.tiers
        dims = tuple(dimension.names(rule) for dimension in DIMENSIONS)
        indexed = _indexable(dims)
        self.keys = [sorted(d) if d is not None and i in indexed else [None] for i, d in enumerate(dims)]
        self.conditions = tuple(_conditions(rule, spec, budgets))
        members = {c.label: c for c in self.conditions if isinstance(c, _Member)}
        skip = {members[DIMENSIONS[i].label] for i in indexed if DIMENSIONS[i].label in members}
        self.checks = tuple((c.holds, c) for c in self.conditions if c not in skip)

    def explain(self, facts: Facts) -> TraceEntry:
        """What held, or the first condition that failed, as the trace shows it."""
        held = []
        for condition in self.conditions:
            ok, text = condition.explain(facts)
            if not ok:
                return TraceEntry(self.name, False, text)
            held.append(text)
        return TraceEntry(self.name, True, "; ".join(held) or "no conditions: matches every proposal")


def _indexable(dims: tuple[frozenset[str] | None, ...]) -> set[int]:
    """Dimensions to index; the widest is dropped while a rule would need too many index entries."""
    indexed = {i for i, d in enumerate(dims) if d is not None}
    while indexed:
        size = 1
        for i in indexed:
            size *= len(dims[i])  # type: ignore[arg-type]
        if size <= INDEX_LIMIT:
            break
        indexed.remove(max(indexed, key=lambda i: len(dims[i])))  # type: ignore[arg-type]
    return indexed


def _conditions(rule: Rule, spec: MatrixSpec, budgets: dict[str, Budget]) -> Iterator[_Condition]:
    """Conditions in Rule field order, so "first failing condition" is well defined."""
    for label, values in zip(ROUTING, (_names_or_any(rule.connectors), _names_or_any(rule.actions),
                                       _names_or_any(rule.agents))):
        if values is not None:
            yield _Member(label, label, values, show_miss=False)
    target_types = _names_or_any(rule.target_types)
    if target_types is not None:
        yield _Member("target type", "target_type", target_types)
    if rule.currency is not None:
        yield _Amount(rule.currency, rule.amount_min, rule.amount_max)
    if rule.confidence_min is not None or rule.confidence_max is not None:
        yield _Confidence(rule.confidence_min, rule.confidence_max)
    if rule.impacts:
        yield _Member("customer impact", "customer_impact", rule.impacts)
    if rule.fields_any:
        yield _FieldsAny(rule.fields_any)
    if rule.touches_sensitive is not None:
        yield _Sensitive(spec.sensitive_fields, rule.touches_sensitive)
    if rule.missing_facts is not None:
        yield _MissingFacts(spec.required_facts, rule.missing_facts)
    if rule.amount_mismatch is not None:
        yield _AmountMismatch(rule.amount_mismatch)
    if rule.override_rate_min is not None:
        yield _OverrideRate(rule.override_rate_min)
    if rule.budget_exceeded is not None:
        yield _BudgetExceeded(rule.budget_exceeded, budgets[rule.budget_exceeded].cap)
    yield from _risk_conditions(rule)


# ---------------------------------------------------------------------------- compiled matrix


class CompiledMatrix:
    """A validated matrix with its rules indexed by every equality field it uses. Share it freely across threads.

    The index maps a key (one name or None per used dimension, None standing for "rule accepts
    any") to the sorted positions of the rules it admits. A proposal looks up only the
    combinations of its own values and None that some rule is filed under (`_patterns`), so its
    candidates come from a few dict lookups however large the matrix is.

    The same filing, as one bitmask of rule positions per dimension and name, counts the rules
    the index skipped for a proposal, by the first dimension that excluded them: the trace
    reports those counts instead of walking the rules, so its cost does not grow with the matrix.
    Immutable, and so thread-safe.
    """

    __slots__ = ("spec", "version", "_rules", "_dims", "_values", "_buckets", "_patterns", "_masks", "_budgets")

    def __init__(self, spec: MatrixSpec) -> None:
        budgets = {b.name: b for b in spec.budgets}
        rules = tuple(_CompiledRule(i, rule, spec, budgets) for i, rule in enumerate(spec.rules))
        used = tuple(d for d in range(len(DIMENSIONS)) if any(rule.keys[d] != [None] for rule in rules))
        buckets: dict[tuple[str | None, ...], list[int]] = {}
        for rule in rules:
            for key in product(*(rule.keys[d] for d in used)):
                buckets.setdefault(key, []).append(rule.index)
        frozen = {
            "spec": spec,
            "version": spec.version,
            "_rules": rules,
            "_dims": tuple(DIMENSIONS[d] for d in used),
            "_values": _values_reader(tuple(DIMENSIONS[d] for d in used)),
            "_buckets": {key: tuple(positions) for key, positions in buckets.items()},
            "_patterns": _key_makers(buckets, len(used)),
            "_masks": tuple(_masks(rules, d) for d in used),
            "_budgets": tuple(
                (b, _names_or_any(b.connectors), _names_or_any(b.actions), _names_or_any(b.agents)) for b in spec.budgets
            ),
        }
        for name, value in frozen.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("CompiledMatrix is immutable")

    def __repr__(self) -> str:
        return f"<CompiledMatrix {self.spec.name} v{self.version}: {len(self._rules)} rules>"

    def candidates(self, facts: Facts) -> Sequence[int]:
        """Positions, in rule order, of the rules the index admits for the facts' values."""
        values = self._values(facts)
        get = self._buckets.get
        found: Sequence[int] = ()
        merged: list[int] | None = None
        for key in self._patterns:
            bucket = get(key(values))
            if bucket:
                if not found:
                    found = bucket
                elif merged is None:
                    merged = [*found, *bucket]
                else:
                    merged.extend(bucket)
        if merged is not None:
            merged.sort()
            return merged
        return found

    def _evaluate(self, facts: Facts) -> tuple[list[_CompiledRule], list[tuple[int, _Condition]]]:
        """The matching rules, and for the other candidates the condition that failed first."""
        rules = self._rules
        matched, failed = [], []
        for i in self.candidates(facts):
            rule = rules[i]
            for holds, condition in rule.checks:
                if not holds(facts):
                    failed.append((i, condition))
                    break
            else:
                matched.append(rule)
        return matched, failed

    def explain(self, index: int, facts: Facts) -> TraceEntry:
        """One rule on its own, index or not: what held, or its first failing condition in Rule field order."""
        return self._rules[index].explain(facts)

    def skipped(self, facts: Facts) -> list[SkippedRules]:
        """The rules the index did not admit, counted by the first dimension (in DIMENSIONS order) that excluded them.

        A few big-integer ANDs and popcounts per used dimension, whatever the matrix's size.
        """
        before = len(self._rules)
        left = (1 << before) - 1
        no_amount = facts.amount is None
        groups = []
        for dimension, value, (by_name, anyone) in zip(self._dims, self._values(facts), self._masks):
            left &= by_name.get(value, anyone)
            now = left.bit_count()
            if now < before:
                groups.append(_skipped(dimension.label, before - now, no_amount))
            before = now
        return groups


@lru_cache(maxsize=4096)
def _skipped(label: str, count: int, no_amount: bool) -> SkippedRules:
    """A group entry; the same few recur across proposals, so they are made once and shared (they are frozen)."""
    one = count == 1
    rules, name, apply = f"{count} rule{'' if one else 's'}", "names" if one else "name", "applies" if one else "apply"
    if label != "currency":
        reason = f"{rules} {name} another {label}"
    elif no_amount:
        reason = f"{rules} {apply} only to an amount, and there is none"
    else:
        reason = f"{rules} {apply} to amounts in another currency"
    return SkippedRules(label, count, reason)


def _values_reader(dims: tuple[_Dimension, ...]) -> Callable[[Facts], tuple[str | None, ...]]:
    """The proposal's value on each dimension, then a None: the key makers pick "any" from that slot."""
    readers = tuple(d.value for d in dims)
    return lambda facts: (*[read(facts) for read in readers], None)


def _key_makers(buckets: Mapping[tuple[str | None, ...], object], width: int) -> tuple[Callable[..., Any], ...]:
    """One key maker per pattern of named/any dimensions some rule is filed under.

    An itemgetter over the proposal's values picks each named dimension's value and, for an
    "any" dimension, the trailing None: a bucket key in one C call instead of a Python loop.
    """
    patterns = sorted({tuple(k is not None for k in key) for key in buckets})
    makers: list[Callable[..., Any]] = []
    for pattern in patterns:
        picks = [i if named else width for i, named in enumerate(pattern)]
        if len(picks) > 1:
            makers.append(itemgetter(*picks))
        else:  # itemgetter of one index returns the item, not a 1-tuple; of none, nothing
            makers.append(lambda values, picks=tuple(picks): tuple(values[i] for i in picks))
    return tuple(makers)


def _masks(rules: Sequence[_CompiledRule], d: int) -> tuple[dict[str, int], int]:
    """For one dimension: per name, the rules that admit it (as bits of rule positions); and those that admit any."""
    anyone = 0
    by_name: dict[str, int] = {}
    for rule in rules:
        if rule.keys[d] == [None]:
            anyone |= 1 << rule.index
        else:
            for name in rule.keys[d]:
                by_name[name] = by_name.get(name, 0) | 1 << rule.index
    return {name: mask | anyone for name, mask in by_name.items()}, anyone


def compile_matrix(spec: MatrixSpec) -> CompiledMatrix:
    """Validate and index a matrix; raises the first MatrixError (see validate() for all of them)."""
    errors = validate(spec)
    if errors:
        raise errors[0]
    return CompiledMatrix(spec)


# ---------------------------------------------------------------------------- trace


class Trace(Sequence["TraceEntry | SkippedRules"]):
    """The trace of a decision, explained on first access.

    One entry per rule the index admitted (the candidates), in matrix order, saying what held
    or the first condition that failed; then one `SkippedRules` per dimension that excluded
    others ("412 rules name another agent"). Its length and cost follow the candidates, not
    the matrix. decide() keeps what it learnt (matching rules, the failing condition of the
    other candidates), so only words are added here. Equal to the tuple of its entries.
    """

    __slots__ = ("_matrix", "_facts", "_matched", "_failed", "_known", "_entries")

    def __init__(
        self, matrix: CompiledMatrix, facts: Facts, matched: list[_CompiledRule],
        failed: list[tuple[int, _Condition]], known: dict[int, TraceEntry],
    ) -> None:
        self._matrix, self._facts, self._matched, self._failed, self._known = matrix, facts, matched, failed, known
        self._entries: tuple[TraceEntry | SkippedRules, ...] | None = None

    def explain_all(self) -> Trace:
        """Explain every entry now (reading the trace does it anyway); returns the trace."""
        if self._entries is None:
            self._entries = self._explain_all()
        return self

    def _explain_all(self) -> tuple[TraceEntry | SkippedRules, ...]:
        facts, rules, known = self._facts, self._matrix._rules, self._known
        slots = [(i, TraceEntry(rules[i].name, False, condition.explain(facts)[1])) for i, condition in self._failed]
        slots += [(rule.index, known.get(rule.index) or rule.explain(facts)) for rule in self._matched]
        if len(slots) > 1:
            slots.sort(key=_position)
        return (*[entry for _, entry in slots], *self._matrix.skipped(facts))

    def entries(self) -> tuple[TraceEntry | SkippedRules, ...]:
        """All entries as a tuple."""
        return self.explain_all()._entries  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.entries())

    @overload
    def __getitem__(self, index: int) -> TraceEntry | SkippedRules: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[TraceEntry | SkippedRules, ...]: ...
    def __getitem__(self, index: int | slice) -> TraceEntry | SkippedRules | tuple[TraceEntry | SkippedRules, ...]:
        return self.entries()[index]

    def __iter__(self) -> Iterator[TraceEntry | SkippedRules]:
        return iter(self.entries())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Trace, tuple, list)):
            return self.entries() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.entries())

    def __repr__(self) -> str:
        return f"Trace({'explained' if self._entries is not None else 'lazy'})"

    def __reduce__(self) -> tuple[type, tuple[tuple[TraceEntry | SkippedRules, ...]]]:
        """Pickled and deep-copied as the plain tuple of entries, without the matrix behind it."""
        return tuple, (self.entries(),)


def _position(slot: tuple[int, TraceEntry]) -> int:
    return slot[0]


# ---------------------------------------------------------------------------- decide


def combine_tiers(tier_sets: Iterable[Sequence[Tier]]) -> tuple[Tier, ...]:
    """Merge review tiers by group, first appearance first; each merge is at least as strict as its inputs."""
    merged: dict[str, Tier] = {}
    for tiers in tier_sets:
        for tier in tiers:
            seen = merged.get(tier.group)
            merged[tier.group] = tier if seen is None else _merge_tier(seen, tier)
    return tuple(merged.values())


def _merge_tier(a: Tier, b: Tier) -> Tier:
    return Tier(
        group=a.group,
        required=max(a.required, b.required),
        mode="all" if "all" in (a.mode, b.mode) else "any",
        sla_minutes=min(a.sla_minutes, b.sla_minutes),
        escalation_group=a.escalation_group or b.escalation_group,
        bulk_allowed=a.bulk_allowed and b.bulk_allowed,
        remind_at=_earlier_reminder(a.remind_at, b.remind_at),
        signed_links=a.signed_links and b.signed_links,
    )


def _earlier_reminder(a: float, b: float) -> float:
    """The earlier of two reminders; 0 (none) only when neither tier asks for one."""
    return min(x for x in (a, b) if x) if (a or b) else 0.0


def decide(facts: Facts, matrix: CompiledMatrix, switches: Sequence[SwitchState] = ()) -> Decision:
    """The outcome for a proposal: strictest matching rule, else the default; then the kill switches."""
    matched, failed = matrix._evaluate(facts)
    spec = matrix.spec
    known: dict[int, TraceEntry] = {}
    deciding: list[_CompiledRule] = []
    if matched:
        top = max(rule.rank for rule in matched)
        deciding = [rule for rule in matched if rule.rank == top]
        outcome = OUTCOMES[top]
        tiers = _review_tiers(deciding) if outcome in PEOPLE_OUTCOMES else ()
        names = tuple(rule.name for rule in deciding)
        known = {rule.index: rule.explain(facts) for rule in deciding}
        reasons = [f"{rule.name}: {known[rule.index].reason}" for rule in deciding]
    elif facts.read_only:  # a read-only action changes nothing: it runs alone unless a rule says otherwise
        outcome, tiers, names = "auto", (), (DEFAULT_RULE,)
        reasons = ["no rule matched: a read-only action runs alone"]
    else:
        outcome = spec.default_outcome
        tiers = spec.default_tiers if outcome in PEOPLE_OUTCOMES else ()
        names = (DEFAULT_RULE,)
        reasons = [f"no rule matched: default {outcome}"]
    applied: tuple[str, ...] = ()
    if switches:
        outcome, tiers, applied = _apply_switches(facts, switches, outcome, tiers, matched, spec, reasons)
    outcome, tiers = _apply_circumstances(facts, outcome, tiers, spec, reasons)
    sampled = _sample(facts, outcome, matched, reasons)
    trace = Trace(matrix, facts, matched, failed, known)
    max_age = _max_age(deciding, spec)
    return Decision(outcome, matrix.version, names, tuple(reasons), tiers, trace, applied,
                    max_age_minutes=max_age, info_wait_minutes=spec.info_wait_minutes, sampled=sampled)


def _max_age(deciding: Sequence[_CompiledRule], spec: MatrixSpec) -> int:
    """The shortest maximum age the deciding rules set, else the matrix default."""
    ages = [rule.rule.max_age_minutes for rule in deciding if rule.rule.max_age_minutes is not None]
    return min(ages) if ages else spec.default_max_age_minutes


def _sample(facts: Facts, outcome: str, matched: Sequence[_CompiledRule], reasons: list[str]) -> bool | None:
    """Whether on-the-loop work lands in the after-the-fact review queue.

    The deciding rules' largest sample_percent counts (the default path: all of it), so a
    combination never samples less than any of its rules; the proposal's fixed `sample_point`
    makes the choice deterministic, and a missing point means review (never less scrutiny).
    """
    if outcome != "on_the_loop":
        return None
    deciding = [rule.rule.sample_percent for rule in matched if rule.outcome == "on_the_loop"]
    percent = 100 if not deciding or None in deciding else max(deciding)  # type: ignore[type-var]
    if percent >= 100 or facts.sample_point is None:
        reasons.append("runs at once; people review it after the fact")
        return True
    sampled = facts.sample_point * 100 < percent
    sign = "<" if sampled else ">="
    verdict = "sampled for after-the-fact review" if sampled else "runs at once, not sampled for review"
    reasons.append(f"{verdict} (sample point {facts.sample_point:.4f} {sign} {percent}%)")
    return sampled


def _review_tiers(rules: Sequence[_CompiledRule]) -> tuple[Tier, ...]:
    if len(rules) == 1:
        return rules[0].tiers
    return combine_tiers(rule.tiers for rule in rules)


FALLBACK_TIERS = (Tier(group="operators"),)  # who reviews when a matrix names no default tiers


def review_floor(spec: MatrixSpec) -> tuple[Tier, ...]:
    """The tiers work gets when people must look at it and no rule said who: the default, else operators."""
    return spec.default_tiers or FALLBACK_TIERS


def _apply_circumstances(
    facts: Facts, outcome: str, tiers: tuple[Tier, ...], spec: MatrixSpec, reasons: list[str],
) -> tuple[str, tuple[Tier, ...]]:
    """What happened around the change, as facts. A failed preview and a person's edit only tighten;
    `review_required` is an operator's explicit release of held work to people (it names itself in
    the reasons), and at least review either way."""
    if facts.review_required:  # a person sent it to people, having seen why it was held
        if outcome == "review":
            return outcome, tiers
        reasons.append(f"sent to people instead of {outcome}: review by the default tiers")
        return "review", review_floor(spec)
    if facts.preview_failed and RANK[outcome] < RANK["triage"]:
        reasons.append("the change could not be previewed: held for triage")
        return "triage", ()
    if facts.human_edit is not None and outcome in RUNS_ALONE:
        reasons.append(f"a person edited the change: it needs {facts.human_edit.group}, never runs alone")
        return "review", (facts.human_edit,)
    return outcome, tiers


def switch_applies(switch: SwitchState, connector: str, action: str, agent: str) -> bool:
    """Whether an engaged switch covers this connector, action or agent (the one coverage rule)."""
    return switch.scope == "global" or {"connector": connector, "action": action, "agent": agent}[switch.scope] == switch.value


def _switch_applies(switch: SwitchState, facts: Facts) -> bool:
    return switch_applies(switch, facts.connector, facts.action, facts.agent)


def _apply_switches(
    facts: Facts, switches: Sequence[SwitchState], outcome: str, tiers: tuple[Tier, ...],
    matched: Sequence[_CompiledRule], spec: MatrixSpec, reasons: list[str],
) -> tuple[str, tuple[Tier, ...], tuple[str, ...]]:
    """Switches only ever tighten: block -> block; force_review -> auto becomes review, and on_the_loop
    becomes review by the people who would have reviewed it after the fact."""
    applied = [s for s in switches if _switch_applies(s, facts)]
    for switch in applied:
        why = f" ({switch.reason})" if switch.reason else ""
        reasons.append(f"kill switch {switch.where} engaged: {switch.mode}{why}")
    if any(s.mode == "block" for s in applied):
        outcome, tiers = "block", ()
    elif applied and outcome == "on_the_loop":
        outcome = "review"
    elif applied and outcome == "auto":
        review = [rule for rule in matched if rule.outcome == "review"]
        outcome, tiers = "review", (_review_tiers(review) if review else spec.default_tiers)
    return outcome, tiers, tuple(s.describe() for s in applied)


def applicable_budgets(facts: Facts, matrix: CompiledMatrix) -> tuple[Budget, ...]:
    """The budgets this proposal counts toward, so the caller computes only their usage."""
    return tuple(
        budget
        for budget, connectors, actions, agents in matrix._budgets
        if (connectors is None or facts.connector in connectors)
        and (actions is None or facts.action in actions)
        and (agents is None or facts.agent in agents)
    )


def at_least_as_strict(new: Decision, old: Decision) -> bool:
    """Whether `new` is no less strict than `old`: outcome not lower, and review tiers not weaker."""
    if RANK[new.outcome] != RANK[old.outcome]:
        return RANK[new.outcome] > RANK[old.outcome]
    if new.outcome not in PEOPLE_OUTCOMES:
        return True
    if old.sampled and new.sampled is False:  # on the loop: what people reviewed they still review
        return False
    by_group = {t.group: t for t in new.tiers}
    for tier in old.tiers:
        now = by_group.get(tier.group)
        if now is None or now.required < tier.required or now.sla_minutes > tier.sla_minutes:
            return False
        if (tier.mode == "all" and now.mode != "all") or (now.bulk_allowed and not tier.bulk_allowed):
            return False
        if now.signed_links and not tier.signed_links:  # a decision without a login is a weaker tier
            return False
    return True


# ---------------------------------------------------------------------------- embedded tests


def run_tests(spec: MatrixSpec) -> list[tuple[MatrixTest, Decision, bool]]:
    """Run the matrix's embedded cases; expect_rules compares as a set (order is the matrix's)."""
    matrix = compile_matrix(spec)
    results = []
    for case in spec.tests:
        decision = decide(facts_from_dict(case.facts), matrix)
        passed = decision.outcome == case.expect and (
            case.expect_rules is None or set(decision.rules) == set(case.expect_rules)
        )
        results.append((case, decision, passed))
    return results
