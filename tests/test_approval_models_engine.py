"""The four approval models and the risk triggers in the engine, case by case (pure Python, no database).

Outcomes: auto (controlled autonomy) < on_the_loop < review (in the loop) < assisted < triage < block.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from policies.engine import (
    Decision,
    Facts,
    MatrixError,
    MatrixSpec,
    Rule,
    SwitchState,
    Tier,
    compile_matrix,
    decide,
    facts_from_dict,
    validate,
)
from policies.matrix_yaml import dump_matrix, load_matrix

OPS = (Tier("operators"),)
SALES = (Tier("sales", escalation_group="sales-leads"),)


def proposal(**overrides: Any) -> Facts:
    return Facts(**{"connector": "crm", "action": "update", "agent": "crm-bot", **overrides})


def spec(*rules: Rule, default: str = "review") -> MatrixSpec:
    return MatrixSpec(version=3, default_outcome=default, default_tiers=OPS, rules=rules)


def run(*rules: Rule, facts: Facts, default: str = "review", switches: tuple[SwitchState, ...] = ()) -> Decision:
    return decide(facts, compile_matrix(spec(*rules, default=default)), switches)


# ---------------------------------------------------------------------------- the outcomes


def test_assisted_rule_routes_a_recommendation_to_its_group_and_says_so_in_the_decision():
    decision = run(Rule("deal-risk-alerts", "assisted", SALES, actions=frozenset({"flag_risk"})),
                   facts=proposal(action="flag_risk"))
    assert (decision.outcome, decision.rules, decision.tiers) == ("assisted", ("deal-risk-alerts",), SALES)
    assert decision.sampled is None
    assert decision.as_dict()["outcome"] == "assisted"


def test_on_the_loop_without_a_sample_reviews_everything_after_the_fact():
    decision = run(Rule("status-updates", "on_the_loop", OPS), facts=proposal(sample_point=0.99))
    assert (decision.outcome, decision.sampled, decision.tiers) == ("on_the_loop", True, OPS)
    assert decision.as_dict()["sampled"] is True
    assert "people review it after the fact" in decision.reasons[-1]


@pytest.mark.parametrize(("point", "sampled"), [(0.0, True), (0.0999, True), (0.1, False), (0.73, False)])
def test_on_the_loop_sample_of_ten_percent_takes_the_proposals_whose_point_is_below_it(point, sampled):
    decision = run(Rule("status-updates", "on_the_loop", OPS, sample_percent=10), facts=proposal(sample_point=point))
    assert (decision.outcome, decision.sampled) == ("on_the_loop", sampled)
    assert ("sampled for after-the-fact review" if sampled else "not sampled") in decision.reasons[-1]


def test_on_the_loop_without_a_sample_point_is_reviewed_rather_than_skipped():
    decision = run(Rule("status-updates", "on_the_loop", OPS, sample_percent=1), facts=proposal())
    assert decision.sampled is True


def test_two_on_the_loop_rules_sample_at_the_larger_rate():
    rules = (Rule("a", "on_the_loop", OPS, sample_percent=10), Rule("b", "on_the_loop", OPS, sample_percent=50))
    assert run(*rules, facts=proposal(sample_point=0.3)).sampled is True
    assert run(*rules, facts=proposal(sample_point=0.6)).sampled is False


@pytest.mark.parametrize(("lenient", "strict"), [
    ("auto", "on_the_loop"), ("on_the_loop", "review"), ("review", "assisted"), ("assisted", "triage"), ("triage", "block"),
])
def test_the_stricter_model_wins_when_two_rules_match(lenient, strict):
    def rule(name: str, outcome: str) -> Rule:
        return Rule(name, outcome, OPS if outcome in ("on_the_loop", "review", "assisted") else ())

    assert run(rule("lenient", lenient), rule("strict", strict), facts=proposal()).outcome == strict


def test_a_force_review_switch_puts_on_the_loop_work_before_its_own_reviewers():
    decision = run(Rule("status-updates", "on_the_loop", SALES), facts=proposal(),
                   switches=(SwitchState("connector", "crm", "force_review"),))
    assert (decision.outcome, decision.tiers, decision.sampled) == ("review", SALES, None)


def test_a_force_review_switch_leaves_an_assisted_recommendation_alone():
    decision = run(Rule("alerts", "assisted", SALES), facts=proposal(), switches=(SwitchState("global", "", "force_review"),))
    assert decision.outcome == "assisted"


def test_a_persons_edit_never_lets_on_the_loop_work_run_alone():
    decision = run(Rule("status-updates", "on_the_loop", OPS), facts=proposal(human_edit=Tier("support")))
    assert (decision.outcome, decision.tiers) == ("review", (Tier("support"),))


def test_the_default_can_be_on_the_loop_with_its_default_tiers():
    decision = run(facts=proposal(), default="on_the_loop")
    assert (decision.outcome, decision.tiers, decision.sampled) == ("on_the_loop", OPS, True)


# ---------------------------------------------------------------------------- the risk triggers

TRIGGER_CASES = [
    # (case id, rule conditions, facts, matches?, trace text)
    ("open_proposal_on_the_record_conflicts", {"conflicting_record": True}, {"open_on_record": 2}, True,
     "2 other open proposal(s) on this record"),
    ("changed_record_conflicts", {"conflicting_record": True}, {"record_changed": frozenset({"stage"})}, True,
     "the record changed since the agent read it: stage"),
    ("quiet_record_does_not_conflict", {"conflicting_record": True}, {}, False, "no conflicting record"),
    ("no_conflict_rule_matches_a_quiet_record", {"conflicting_record": False}, {}, True, "no conflicting record"),
    ("repeated_overrides_at_threshold", {"overrides_min": 3}, {"overrides": 3}, True, "recent overrides on this action 3 >= 3"),
    ("overrides_below_threshold", {"overrides_min": 3}, {"overrides": 2}, False, "recent overrides on this action 2 < 3"),
    ("no_history_no_overrides", {"overrides_min": 1}, {}, False, "no override count known for the agent"),
    ("burst_far_above_usual", {"burst_ratio_min": 10.0}, {"burst_ratio": 12.5}, True, "proposal rate x usual 12.5 >= 10.0"),
    ("usual_rate_is_no_burst", {"burst_ratio_min": 10.0}, {"burst_ratio": 1.2}, False, "proposal rate x usual 1.2 < 10.0"),
    ("no_baseline_no_burst", {"burst_ratio_min": 10.0}, {}, False, "no usual rate known for the agent"),
    ("amount_above_p99_is_unusual", {"unusual_amount": True}, {"amount": "900", "currency": "USD", "amount_p99": "400"},
     True, "amount 900 > the agent's 99th percentile 400"),
    ("amount_at_p99_is_usual", {"unusual_amount": True}, {"amount": "400", "currency": "USD", "amount_p99": "400"},
     False, "amount 400 <= the agent's 99th percentile 400"),
    ("short_history_is_not_unusual", {"unusual_amount": True}, {"amount": "900", "currency": "USD"}, False,
     "too little history for a 99th percentile"),
    ("new_agent_in_its_first_actions", {"first_actions": 20}, {"prior_actions": 4}, True,
     "the agent's earlier update proposals 4 < 20"),
    ("experienced_agent_past_its_first_actions", {"first_actions": 20}, {"prior_actions": 20}, False,
     "the agent's earlier update proposals 20 >= 20"),
]


@pytest.mark.parametrize(("conditions", "facts", "matches", "reason"), [c[1:] for c in TRIGGER_CASES],
                         ids=[c[0] for c in TRIGGER_CASES])
def test_risk_trigger_conditions_match_and_explain_themselves(conditions, facts, matches, reason):
    rule = Rule("watch", "triage", **conditions)
    decision = run(rule, facts=proposal(**facts), default="auto")
    assert decision.outcome == ("triage" if matches else "auto")
    entry = decision.trace[0]
    assert (entry.matched, entry.reason) == (matches, reason)


def test_first_n_actions_of_a_new_agent_go_on_the_loop_and_then_run_alone():
    rules = (Rule("new-agents-watched", "on_the_loop", OPS, first_actions=25),)
    assert run(*rules, facts=proposal(prior_actions=0), default="auto").outcome == "on_the_loop"
    assert run(*rules, facts=proposal(prior_actions=25), default="auto").outcome == "auto"


def test_risk_facts_come_from_plain_data_as_a_stored_decision_keeps_them():
    facts = facts_from_dict({
        "connector": "crm", "action": "update", "agent": "a", "open_on_record": 1, "record_changed": ["stage"],
        "overrides": 2, "burst_ratio": 3.5, "amount_p99": "410.00", "prior_actions": 7, "sample_point": 0.25,
    })
    assert (facts.open_on_record, facts.record_changed, facts.amount_p99) == (1, frozenset({"stage"}), Decimal("410.00"))
    assert (facts.overrides, facts.burst_ratio, facts.prior_actions, facts.sample_point) == (2, 3.5, 7, 0.25)


@pytest.mark.parametrize(("name", "value"), [
    ("open_on_record", -1), ("overrides", 1.5), ("prior_actions", True), ("sample_point", 1.0), ("burst_ratio", -2),
])
def test_bad_risk_facts_are_refused_by_name(name, value):
    with pytest.raises(MatrixError) as caught:
        facts_from_dict({"connector": "crm", "action": "update", "agent": "a", name: value})
    assert name in str(caught.value)


# ---------------------------------------------------------------------------- validation and YAML

VALIDATION_CASES = [
    ("assisted_needs_tiers", Rule("r", "assisted"), "rules[0].tiers", "required when outcome is assisted"),
    ("on_the_loop_needs_tiers", Rule("r", "on_the_loop"), "rules[0].tiers", "required when outcome is on_the_loop"),
    ("sample_only_on_the_loop", Rule("r", "review", OPS, sample_percent=10), "rules[0].sample_percent", "only an on_the_loop"),
    ("sample_within_1_to_100", Rule("r", "on_the_loop", OPS, sample_percent=0), "rules[0].sample_percent", "from 1 to 100"),
    ("first_actions_positive", Rule("r", "auto", first_actions=0), "rules[0].first_actions", ">= 1"),
    ("overrides_min_whole", Rule("r", "auto", overrides_min=1.5), "rules[0].overrides_min", ">= 1"),  # type: ignore[arg-type]
    ("burst_ratio_positive", Rule("r", "auto", burst_ratio_min=0), "rules[0].burst_ratio_min", "> 0"),
    ("conflict_flag_boolean", Rule("r", "auto", conflicting_record="yes"), "rules[0].conflicting_record", "true or false"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("rule", "path", "message"), [c[1:] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES])
def test_model_and_trigger_validation_names_the_field(rule, path, message):
    errors = validate(spec(rule))
    assert any(e.path == path and message in e.message for e in errors), [str(e) for e in errors]


def test_new_outcomes_and_triggers_round_trip_through_yaml():
    original = spec(
        Rule("alerts", "assisted", SALES, conflicting_record=True),
        Rule("loop", "on_the_loop", OPS, sample_percent=10, first_actions=25, overrides_min=2, burst_ratio_min=8.0,
             unusual_amount=False),
    )
    text = dump_matrix(original)
    assert "sample_percent: 10" in text and "outcome: on_the_loop" in text
    assert load_matrix(text) == original
