"""Properties of the decision engine, checked with hypothesis over random valid matrices and proposals.

The central one is monotonicity: tightening a matrix (adding a rule, engaging a kill switch)
must never loosen a decision. The strategies here are shared with test_matrix_yaml.py.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from policies.engine import (
    IMPACTS,
    OUTCOMES,
    PEOPLE_OUTCOMES,
    Budget,
    Decision,
    Facts,
    MatrixSpec,
    MatrixTest,
    Rule,
    SkippedRules,
    SwitchState,
    Tier,
    TraceEntry,
    at_least_as_strict,
    combine_tiers,
    compile_matrix,
    decide,
    validate,
)

CONNECTORS = ["crm", "helpdesk", "email"]
ACTIONS = ["update", "refund", "send_email", "delete"]
AGENTS = ["bot-a", "bot-b"]
GROUPS = ["finance", "support", "sales", "triage"]
FIELDS = ["email", "iban", "name", "notes"]
FACT_NAMES = ["target", "changes", "rationale", "amount", "evidence"]
BUDGETS = ["refunds-per-day", "emails-per-hour"]
RANK = {outcome: rank for rank, outcome in enumerate(OUTCOMES)}
PROPERTY_SETTINGS = settings()  # the profile's (tests/conftest.py): HYPOTHESIS_PROFILE=thorough runs 10x as many

# Strategies are built once at module level: hypothesis caches per strategy object, and
# rebuilding them inside every draw made generation the bulk of the run time.


def sometimes(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value one time in three, else None: random rules with every condition would almost never match."""
    return st.none() | st.none() | values


decimals = st.decimals(min_value=0, max_value=5000, allow_nan=False, allow_infinity=False, places=2)
unit_floats = st.floats(min_value=0, max_value=1, allow_nan=False)
outcomes = st.sampled_from(OUTCOMES)
currencies = st.sampled_from(["USD", "EUR"])
plain_descriptions = st.sampled_from(["", "why this rule exists"])
any_descriptions = st.text(max_size=30)  # exercises YAML quoting; slower to generate, so only where needed
STRICTER = {d: st.sampled_from(OUTCOMES[RANK[d] + 1:]) for d in OUTCOMES[:-1]}
maybe_flags = sometimes(st.booleans())

tiers = st.builds(
    Tier, group=st.sampled_from(GROUPS), required=st.integers(1, 3), mode=st.sampled_from(["any", "all"]),
    sla_minutes=st.integers(1, 1000), escalation_group=st.sampled_from(["", "leads", "board"]),
    bulk_allowed=st.booleans(),
)
tier_lists = st.lists(tiers, min_size=1, max_size=3, unique_by=lambda t: t.group).map(tuple)


def name_sets(pool: list[str]) -> st.SearchStrategy[frozenset[str] | None]:
    return sometimes(st.frozensets(st.sampled_from([*pool, "*"]), max_size=3))


connector_sets, action_sets, agent_sets = name_sets(CONNECTORS), name_sets(ACTIONS), name_sets(AGENTS)
target_sets = sometimes(st.frozensets(st.sampled_from(["contact", "ticket"]), max_size=2))
impact_sets = sometimes(st.frozensets(st.sampled_from(IMPACTS), max_size=3))
field_sets = sometimes(st.frozensets(st.sampled_from(FIELDS), max_size=2))
budget_choices = {names: sometimes(st.sampled_from(names)) for names in [(BUDGETS[0],), (BUDGETS[1],), tuple(BUDGETS), tuple(BUDGETS[::-1])]}


@st.composite
def ranges(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> tuple[Any, Any]:
    """A half-open [low, high) with at least one end given, never empty."""
    low, high = draw(st.none() | values), draw(values)
    if low is not None:
        low, high = sorted((low, high))
        assume(low < high)
    return (low, high) if draw(st.booleans()) else (high, None)


amount_ranges = sometimes(ranges(decimals))
confidence_ranges = sometimes(ranges(unit_floats))


@st.composite
def rules(
    draw: st.DrawFn, name: str, budgets: tuple[str, ...] = (), sensitive: bool = False, required: bool = False,
    outcome_choices: st.SearchStrategy[str] = outcomes, descriptions: st.SearchStrategy[str] = plain_descriptions,
) -> Rule:
    """A valid rule for a matrix with these budgets, and with or without sensitive fields / required facts."""
    outcome = draw(outcome_choices)
    sample_percent = draw(sometimes(st.integers(1, 100))) if outcome == "on_the_loop" else None
    amount_min, amount_max = draw(amount_ranges) or (None, None)
    confidence_min, confidence_max = draw(confidence_ranges) or (None, None)
    return Rule(
        name=name, outcome=outcome, tiers=draw(tier_lists) if outcome in PEOPLE_OUTCOMES else (),
        description=draw(descriptions), connectors=draw(connector_sets), actions=draw(action_sets),
        agents=draw(agent_sets), target_types=draw(target_sets),
        currency=draw(currencies) if amount_min is not None or amount_max is not None else None,
        amount_min=amount_min, amount_max=amount_max, confidence_min=confidence_min, confidence_max=confidence_max,
        impacts=draw(impact_sets), fields_any=draw(field_sets),
        touches_sensitive=draw(maybe_flags) if sensitive else None,
        missing_facts=draw(maybe_flags) if required else None,
        override_rate_min=draw(sometimes(unit_floats)),
        budget_exceeded=draw(budget_choices[budgets]) if budgets else None,
        conflicting_record=draw(maybe_flags), overrides_min=draw(sometimes(st.integers(1, 5))),
        burst_ratio_min=draw(sometimes(st.floats(0.5, 20))), unusual_amount=draw(maybe_flags),
        first_actions=draw(sometimes(st.integers(1, 20))), sample_percent=sample_percent,
    )


budget_names = st.lists(st.sampled_from(BUDGETS), unique=True, max_size=2).map(tuple)


@st.composite
def budget_lists(draw: st.DrawFn) -> tuple[Budget, ...]:
    return tuple(
        Budget(name=name, metric=draw(st.sampled_from(["amount", "count"])), cap=draw(decimals),
               window_minutes=draw(st.integers(1, 1440)), connectors=draw(connector_sets),
               actions=draw(action_sets), agents=draw(agent_sets))
        for name in draw(budget_names)
    )


@st.composite
def plain_facts(draw: st.DrawFn) -> dict[str, Any]:
    """Facts as an embedded test case holds them: plain data, amount as a string."""
    facts: dict[str, Any] = {"connector": draw(st.sampled_from(CONNECTORS)), "action": draw(st.sampled_from(ACTIONS)),
                             "agent": draw(st.sampled_from(AGENTS))}
    if draw(st.booleans()):
        facts.update(amount=str(draw(decimals)), currency=draw(currencies))
    if draw(st.booleans()):
        facts["confidence"] = draw(unit_floats)
    if draw(st.booleans()):
        facts["fields"] = draw(st.lists(st.sampled_from(FIELDS), unique=True, max_size=3))
    if draw(st.booleans()):
        facts["usage"] = {draw(st.sampled_from(BUDGETS)): str(draw(decimals))}
    return facts


sensitive_sets = st.frozensets(st.sampled_from(FIELDS), max_size=2)
required_lists = st.lists(st.sampled_from(FACT_NAMES), unique=True, max_size=3).map(tuple)


@st.composite
def specs(
    draw: st.DrawFn, max_rules: int = 6, with_tests: bool = False, default_outcome: str | None = None, min_rules: int = 0,
    descriptions: st.SearchStrategy[str] = plain_descriptions,
) -> MatrixSpec:
    budgets = draw(budget_lists())
    sensitive, required = draw(sensitive_sets), draw(required_lists)
    count = draw(st.integers(min_rules, max_rules))
    names = tuple(b.name for b in budgets)
    rule_list = tuple(
        draw(rules(f"rule-{i}", names, bool(sensitive), bool(required), descriptions=descriptions)) for i in range(count)
    )
    tests: tuple[MatrixTest, ...] = ()
    if with_tests:
        rule_names = st.sampled_from([r.name for r in rule_list] + ["default"])
        tests = tuple(
            MatrixTest(name=f"case-{i}", facts=draw(plain_facts()), expect=draw(outcomes),
                       expect_rules=draw(st.none() | st.lists(rule_names, unique=True).map(tuple)))
            for i in range(draw(st.integers(0, 3)))
        )
    spec = MatrixSpec(
        version=draw(st.integers(1, 50)), name=draw(st.sampled_from(["default", "demo", "ops"])),
        default_outcome=default_outcome or draw(outcomes), default_tiers=draw(tier_lists),
        rules=rule_list, sensitive_fields=sensitive, required_facts=required, budgets=budgets, tests=tests,
    )
    errors = validate(spec)
    assert errors == [], errors  # the strategy itself must only build valid matrices
    return spec


@st.composite
def facts(draw: st.DrawFn) -> Facts:
    has_amount = draw(st.booleans())
    return Facts(
        connector=draw(st.sampled_from([*CONNECTORS, "erp"])), action=draw(st.sampled_from([*ACTIONS, "merge"])),
        agent=draw(st.sampled_from([*AGENTS, "bot-z"])), target_type=draw(st.sampled_from(["", "contact", "ticket"])),
        amount=draw(decimals) if has_amount else None, currency=draw(st.sampled_from(["USD", "usd", "EUR"])) if has_amount else "",
        confidence=draw(unit_floats), customer_impact=draw(st.sampled_from(IMPACTS)),
        fields=draw(st.frozensets(st.sampled_from(FIELDS), max_size=3)), override_rate=draw(st.none() | unit_floats),
        usage=draw(st.dictionaries(st.sampled_from(BUDGETS), decimals, max_size=2)),
        present=draw(st.frozensets(st.sampled_from(FACT_NAMES), max_size=5)),
        open_on_record=draw(st.integers(0, 2)), record_changed=draw(st.frozensets(st.sampled_from(FIELDS), max_size=1)),
        overrides=draw(st.none() | st.integers(0, 6)), burst_ratio=draw(st.none() | st.floats(0, 30)),
        amount_p99=draw(st.none() | decimals), prior_actions=draw(st.none() | st.integers(0, 30)),
        sample_point=draw(st.none() | st.floats(0, 1, exclude_max=True)),
    )


switches = st.builds(
    lambda scope, value, mode: SwitchState(scope, "" if scope == "global" else value, mode),
    st.sampled_from(["global", "connector", "action", "agent"]),
    st.sampled_from([*CONNECTORS, *ACTIONS, *AGENTS]),
    st.sampled_from(["force_review", "block"]),
)


def assert_not_relaxed(old: Decision, new: Decision) -> None:
    """The monotonicity contract, spelled out rather than delegated to the engine's own helper."""
    assert RANK[new.outcome] >= RANK[old.outcome], (old, new)
    if old.outcome == new.outcome == "on_the_loop":
        assert new.sampled or not old.sampled, (old, new)  # reviewed after the fact stays reviewed
    if old.outcome == new.outcome and new.outcome in PEOPLE_OUTCOMES:
        now = {t.group: t for t in new.tiers}
        for tier in old.tiers:
            assert tier.group in now, (old.tiers, new.tiers)
            assert now[tier.group].required >= tier.required
            assert now[tier.group].sla_minutes <= tier.sla_minutes
            assert tier.mode == "any" or now[tier.group].mode == "all"
            assert tier.bulk_allowed or not now[tier.group].bulk_allowed
    assert at_least_as_strict(new, old)


def strictness(tier: Tier) -> tuple[str, int, str, int, bool]:
    return tier.group, tier.required, tier.mode, tier.sla_minutes, tier.bulk_allowed


def with_rule(spec: MatrixSpec, rule: Rule, position: int) -> MatrixSpec:
    rules_list = list(spec.rules)
    rules_list.insert(position % (len(rules_list) + 1), rule)
    return replace(spec, rules=tuple(rules_list))


CONDITIONS = [f.name for f in fields(Rule) if f.name not in ("name", "outcome", "tiers", "description", "sample_percent")]


def added_rule(data: st.DataObject, spec: MatrixSpec, outcome_choices: st.SearchStrategy[str] = outcomes) -> Rule:
    """A random rule, half the time stripped to at most one condition so that it often matches."""
    budgets = tuple(b.name for b in spec.budgets)
    rule = data.draw(rules("added", budgets, bool(spec.sensitive_fields), bool(spec.required_facts), outcome_choices))
    if data.draw(st.booleans()):
        keep = data.draw(st.sampled_from(CONDITIONS))
        amount = ("currency", "amount_min", "amount_max")
        rule = replace(rule, **{c: None for c in CONDITIONS if c != keep and not (keep in amount and c in amount)})
    return rule


# ---------------------------------------------------------------------------- monotonicity


@PROPERTY_SETTINGS
@given(spec=specs(), proposal=facts(), engaged=st.lists(switches, max_size=3), extra=switches)
def test_engaging_a_switch_never_relaxes_a_decision(spec, proposal, engaged, extra):
    matrix = compile_matrix(spec)
    assert_not_relaxed(decide(proposal, matrix), decide(proposal, matrix, engaged))
    assert_not_relaxed(decide(proposal, matrix, engaged), decide(proposal, matrix, [*engaged, extra]))


@PROPERTY_SETTINGS
@given(spec=specs(min_rules=1), proposals=st.lists(facts(), min_size=1, max_size=8), position=st.integers(0, 10), data=st.data())
def test_adding_a_rule_never_relaxes_a_decision_made_by_rules(spec, proposals, position, data):
    before = [decide(p, compile_matrix(spec)) for p in proposals]
    assume(any(old.rules != ("default",) for old in before))
    matrix = compile_matrix(with_rule(spec, added_rule(data, spec), position))
    for proposal, old in zip(proposals, before):
        if old.rules != ("default",):
            assert_not_relaxed(old, decide(proposal, matrix))


@PROPERTY_SETTINGS
@given(spec=specs(min_rules=1), proposals=st.lists(facts(), min_size=1, max_size=8),
       engaged=st.lists(switches, min_size=1, max_size=2), position=st.integers(0, 10), data=st.data())
def test_with_switches_engaged_adding_a_rule_never_lowers_the_outcome(spec, proposals, engaged, position, data):
    """Tiers are not compared here: the default tiers a force_review switch lent an auto decision
    give way to the added review rule's own tiers (documented in policies.engine)."""
    before = [decide(p, compile_matrix(spec), engaged) for p in proposals]
    assume(any(old.rules != ("default",) for old in before))
    matrix = compile_matrix(with_rule(spec, added_rule(data, spec), position))
    for proposal, old in zip(proposals, before):
        if old.rules != ("default",):
            assert RANK[decide(proposal, matrix, engaged).outcome] >= RANK[old.outcome]


@PROPERTY_SETTINGS
@given(default=st.sampled_from(OUTCOMES[:-1]), proposal=facts(), position=st.integers(0, 10), data=st.data())
def test_adding_a_rule_stricter_than_the_default_never_relaxes_any_decision(default, proposal, position, data):
    spec = data.draw(specs(default_outcome=default))
    rule = added_rule(data, spec, STRICTER[default])
    old = decide(proposal, compile_matrix(spec))
    assert_not_relaxed(old, decide(proposal, compile_matrix(with_rule(spec, rule, position))))


@PROPERTY_SETTINGS
@given(spec=specs(default_outcome="auto"), proposal=facts(), position=st.integers(0, 10), data=st.data())
def test_with_an_auto_default_adding_any_rule_never_relaxes_any_decision(spec, proposal, position, data):
    old = decide(proposal, compile_matrix(spec))
    new = decide(proposal, compile_matrix(with_rule(spec, added_rule(data, spec), position)))
    assert_not_relaxed(old, new)


@PROPERTY_SETTINGS
@given(spec=specs(), proposals=st.lists(facts(), min_size=1, max_size=8), position=st.integers(0, 10), data=st.data())
def test_a_rule_added_over_the_default_decides_alone_and_by_name(spec, proposals, position, data):
    """The one way an added rule can relax a decision: taking over from the default, visibly."""
    before = [decide(p, compile_matrix(spec)) for p in proposals]
    assume(any(old.rules == ("default",) for old in before))
    rule = added_rule(data, spec)
    matrix = compile_matrix(with_rule(spec, rule, position))
    for proposal, old in zip(proposals, before):
        if old.rules != ("default",):
            continue
        new = decide(proposal, matrix)
        if new.rules == ("default",):
            assert (new.outcome, new.tiers, new.reasons) == (old.outcome, old.tiers, old.reasons)
        else:
            assert new.rules == ("added",)
            assert (new.outcome, new.tiers) == (rule.outcome, rule.tiers)


@PROPERTY_SETTINGS
@given(spec=specs(), proposal=facts(), order=st.randoms(use_true_random=False))
def test_rule_order_never_changes_the_outcome_or_the_deciding_rules(spec, proposal, order):
    shuffled = list(spec.rules)
    order.shuffle(shuffled)
    old = decide(proposal, compile_matrix(spec))
    new = decide(proposal, compile_matrix(replace(spec, rules=tuple(shuffled))))
    assert new.outcome == old.outcome
    assert set(new.rules) == set(old.rules)
    # tiers merge the same way in any order; only "first non-empty escalation group" follows rule order
    assert {strictness(t) for t in new.tiers} == {strictness(t) for t in old.tiers}


@given(st.lists(tier_lists, min_size=1, max_size=4))
def test_combined_tiers_are_at_least_as_strict_as_each_rule_alone(tier_sets):
    combined = Decision("review", 1, (), (), combine_tiers(tier_sets), ())
    for tier_set in tier_sets:
        assert_not_relaxed(Decision("review", 1, (), (), tier_set, ()), combined)
    assert len({t.group for t in combined.tiers}) == len(combined.tiers)


# ---------------------------------------------------------------------------- where the four models sit


def test_the_four_approval_models_sit_between_auto_and_triage_in_strictness_order():
    """Controlled autonomy (auto) < on the loop (runs, reviewed after) < in the loop (review: approved
    before it runs) < AI-assisted (a recommendation: the system never writes) < triage < block."""
    assert OUTCOMES == ("auto", "on_the_loop", "review", "assisted", "triage", "block")


@PROPERTY_SETTINGS
@given(spec=specs(), proposal=facts(), engaged=st.lists(switches, min_size=1, max_size=3))
def test_a_force_review_switch_never_lets_on_the_loop_work_run_before_review(spec, proposal, engaged):
    """Engaging switches moves on-the-loop work up to review (or block); assisted and stricter stay put."""
    matrix = compile_matrix(spec)
    old, new = decide(proposal, matrix), decide(proposal, matrix, engaged)
    if new.switches and old.outcome == "on_the_loop":
        assert new.outcome in ("review", "block")
    if old.outcome in ("assisted", "triage", "block"):
        assert new.outcome in (old.outcome, "block")


@PROPERTY_SETTINGS
@given(spec=specs(), proposal=facts(), point=st.floats(0, 1, exclude_max=True))
def test_on_the_loop_sampling_is_a_pure_function_of_the_stored_sample_point(spec, proposal, point):
    """Same facts, same sample: a simulation replaying stored facts sees exactly production's choice."""
    matrix = compile_matrix(spec)
    pinned = replace(proposal, sample_point=point)
    first, again = decide(pinned, matrix), decide(replace(pinned), matrix)
    assert (first.outcome, first.sampled) == (again.outcome, again.sampled)
    assert (first.sampled is None) == (first.outcome != "on_the_loop")


# ---------------------------------------------------------------------------- the index changes nothing


INDEXED = ("connector", "action", "agent", "target type", "currency", "customer impact")


def index_excludes(rule: Rule, f: Facts) -> str | None:
    """The first field, in the index's order, on which the rule cannot apply to the proposal; None if none."""

    def admits(values: frozenset[str] | None, value: str) -> bool:
        return not values or "*" in values or value in values

    fits = (admits(rule.connectors, f.connector), admits(rule.actions, f.action), admits(rule.agents, f.agent),
            admits(rule.target_types, f.target_type),
            rule.currency is None or (f.amount is not None and f.currency.upper() == rule.currency),
            not rule.impacts or f.customer_impact in rule.impacts)
    return next((field for field, fit in zip(INDEXED, fits) if not fit), None)


def reference_matches(rule: Rule, f: Facts, spec: MatrixSpec) -> bool:
    """The semantics written out naively, without the engine's index or condition objects."""

    def admits(values: frozenset[str] | None, value: str) -> bool:
        return not values or "*" in values or value in values

    def present(name: str) -> bool:
        value = getattr(f, name, None)
        return name in f.present or (value is not None and value != "" and value != frozenset() and value != {})

    checks = [
        admits(rule.connectors, f.connector), admits(rule.actions, f.action), admits(rule.agents, f.agent),
        admits(rule.target_types, f.target_type), admits(rule.impacts, f.customer_impact),
        not rule.fields_any or bool(rule.fields_any & f.fields),
        rule.confidence_min is None or f.confidence >= rule.confidence_min,
        rule.confidence_max is None or f.confidence < rule.confidence_max,
        rule.touches_sensitive is None or bool(f.fields & spec.sensitive_fields) == rule.touches_sensitive,
        rule.missing_facts is None or (not all(present(n) for n in spec.required_facts)) == rule.missing_facts,
        rule.override_rate_min is None or (f.override_rate is not None and f.override_rate >= rule.override_rate_min),
    ]
    if rule.currency is not None:
        checks.append(f.amount is not None and f.currency.upper() == rule.currency)
        checks.append(f.amount is None or rule.amount_min is None or f.amount >= rule.amount_min)
        checks.append(f.amount is None or rule.amount_max is None or f.amount < rule.amount_max)
    if rule.budget_exceeded is not None:
        cap = next(b.cap for b in spec.budgets if b.name == rule.budget_exceeded)
        checks.append(rule.budget_exceeded in f.usage and f.usage[rule.budget_exceeded] > cap)
    checks += [
        rule.conflicting_record is None or (f.open_on_record > 0 or bool(f.record_changed)) == rule.conflicting_record,
        rule.overrides_min is None or (f.overrides is not None and f.overrides >= rule.overrides_min),
        rule.burst_ratio_min is None or (f.burst_ratio is not None and f.burst_ratio >= rule.burst_ratio_min),
        rule.unusual_amount is None
        or (f.amount is not None and f.amount_p99 is not None and f.amount > f.amount_p99) == rule.unusual_amount,
        rule.first_actions is None or (f.prior_actions is not None and f.prior_actions < rule.first_actions),
    ]
    return all(checks)


@PROPERTY_SETTINGS
@given(spec=specs(max_rules=12), proposal=facts())
def test_indexed_decision_and_trace_agree_with_evaluating_every_rule(spec, proposal):
    matrix = compile_matrix(spec)
    decision = decide(proposal, matrix)
    expected = [r for r in spec.rules if reference_matches(r, proposal, spec)]
    listed = [e for e in decision.trace if isinstance(e, TraceEntry)]
    candidates = [r for r in spec.rules if index_excludes(r, proposal) is None]
    assert [e.rule for e in listed] == [r.name for r in candidates]
    assert [e.matched for e in listed] == [r in expected for r in candidates]
    assert listed == [matrix.explain(spec.rules.index(r), proposal) for r in candidates]  # as each rule explains itself
    assert list(decision.trace) == [decision.trace[i] for i in range(len(decision.trace))]  # bulk == one by one
    if not expected:
        assert decision.outcome == spec.default_outcome and decision.rules == ("default",)
    else:
        top = max(RANK[r.outcome] for r in expected)
        assert decision.outcome == OUTCOMES[top]
        assert decision.rules == tuple(r.name for r in expected if RANK[r.outcome] == top)


@PROPERTY_SETTINGS
@given(spec=specs(max_rules=12), proposal=facts())
def test_the_grouped_trace_counts_every_skipped_rule_under_the_field_that_excluded_it(spec, proposal):
    decision = decide(proposal, compile_matrix(spec))
    groups = [e for e in decision.trace if isinstance(e, SkippedRules)]
    excluded = [index_excludes(rule, proposal) for rule in spec.rules]
    expected = {field: excluded.count(field) for field in INDEXED if field in excluded}
    assert {g.field: g.count for g in groups} == expected
    assert [g.field for g in groups] == [field for field in INDEXED if field in expected]  # in the index's order
    assert all(g.reason.startswith(f"{g.count} rule") for g in groups)
    assert sum(g.count for g in groups) + (len(decision.trace) - len(groups)) == len(spec.rules)


@PROPERTY_SETTINGS
@given(spec=specs(max_rules=12), proposal=facts(), engaged=st.lists(switches, max_size=2))
def test_decide_and_the_traced_decision_agree(spec, proposal, engaged):
    """The rules the trace says matched are the ones decide() chose from: the strictest of them decided."""
    decision = decide(proposal, compile_matrix(spec), tuple(engaged))
    traced = [e.rule for e in decision.trace if e.matched]
    rank = {r.name: RANK[r.outcome] for r in spec.rules}
    if traced:
        top = max(rank[name] for name in traced)
        assert decision.rules == tuple(name for name in traced if rank[name] == top)
    else:
        assert decision.rules == ("default",)
    assert not any(e.matched for e in decision.trace if isinstance(e, SkippedRules))
