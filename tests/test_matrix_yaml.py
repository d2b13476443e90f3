"""YAML import/export of a matrix: exact round trips, canonical text, strict errors with paths."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings

from policies.engine import MatrixError, MatrixSpec, Rule, Tier, run_tests, validate
from policies.matrix_yaml import dump_matrix, load_matrix, matrix_from_dict, matrix_to_dict
from tests.test_policy_monotonic import any_descriptions, specs

DEMO = Path(__file__).resolve().parent.parent / "policies" / "examples" / "demo_matrix.yaml"
ROUND_TRIP = settings()  # the profile's (tests/conftest.py): HYPOTHESIS_PROFILE=thorough runs 10x as many


@ROUND_TRIP
@given(specs(with_tests=True, descriptions=any_descriptions))
def test_any_valid_matrix_survives_a_yaml_round_trip(spec):
    assert load_matrix(dump_matrix(spec)) == spec


@ROUND_TRIP
@given(specs(with_tests=True, descriptions=any_descriptions))
def test_dumped_text_is_canonical(spec):
    text = dump_matrix(spec)
    assert dump_matrix(load_matrix(text)) == text


@ROUND_TRIP
@given(specs(with_tests=True))
def test_plain_data_is_json_ready_and_round_trips(spec):
    data = json.loads(json.dumps(matrix_to_dict(spec)))
    assert matrix_from_dict(data) == spec


def test_demo_matrix_is_canonical_valid_and_passes_its_tests():
    text = DEMO.read_text()
    spec = load_matrix(text)
    assert dump_matrix(spec) == text
    assert validate(spec) == []
    assert all(passed for _, _, passed in run_tests(spec))


def test_decimals_are_written_as_strings_and_defaults_left_out():
    spec = MatrixSpec(version=3, default_tiers=(Tier("triage"),), rules=(
        Rule("big", "review", tiers=(Tier("finance", 2),), currency="USD", amount_min=Decimal("1000.00")),
    ))
    assert dump_matrix(spec) == (
        "version: 3\n"
        "name: default\n"
        "default_outcome: review\n"
        "default_tiers:\n"
        "- group: triage\n"
        "  required: 1\n"
        "  sla_minutes: 240\n"
        "rules:\n"
        "- name: big\n"
        "  currency: USD\n"
        "  amount_min: '1000.00'\n"
        "  outcome: review\n"
        "  tiers:\n"
        "  - group: finance\n"
        "    required: 2\n"
        "    sla_minutes: 240\n"
    )


@pytest.mark.parametrize(
    "text",
    ["yes", "null", "1e3", "0.10", "# not a comment", "key: value", " padded ", "two\nlines\n", "next\x85line",
     "line\u2028separator", "bom\ufeff", "tab\there", "émoji 🚦", ""],
    ids=["yes", "null", "number", "decimal", "hash", "colon", "padded", "multiline", "nel", "line_separator", "bom", "tab",
         "unicode", "empty"],
)
def test_tricky_strings_round_trip(text):
    spec = MatrixSpec(version=1, default_outcome="block", rules=(Rule("r", "block", description=text),))
    assert load_matrix(dump_matrix(spec)).rules[0].description == text


def test_empty_name_set_and_absent_name_set_stay_distinct():
    spec = MatrixSpec(version=1, default_outcome="block", rules=(Rule("r", "block", connectors=frozenset()),))
    text = dump_matrix(spec)
    assert "connectors: []" in text and "actions" not in text
    assert load_matrix(text) == spec


BASE = """\
version: 1
default_tiers:
- group: triage
budgets:
- {name: refunds, metric: amount, cap: '100', window_minutes: 60}
rules:
- {name: a, outcome: block}
- {name: b, outcome: auto}
"""

ERROR_CASES = [
    # (case id, text, path, message fragment)
    ("amount_as_float", BASE + "- {name: c, outcome: block, currency: USD, amount_min: 100.5}\n",
     "rules[2].amount_min", "not a decimal"),
    ("amount_as_words", BASE + "- {name: c, outcome: block, currency: USD, amount_min: lots}\n", "rules[2].amount_min", "not a decimal"),
    ("misspelt_key", BASE + "- {name: c, outcome: block, amout_min: '5'}\n", "rules[2].amout_min", "did you mean amount_min?"),
    ("unknown_top_level_key", BASE + "owner: ops\n", "owner", "unknown key"),
    ("names_not_a_list", BASE + "- {name: c, outcome: block, actions: refund}\n", "rules[2].actions", "not a list of strings"),
    ("name_list_with_a_number", BASE + "- {name: c, outcome: block, actions: [refund, 7]}\n", "rules[2].actions[1]", "not a string"),
    ("quorum_as_text", BASE + "- {name: c, outcome: review, tiers: [{group: finance, required: two}]}\n",
     "rules[2].tiers[0].required", "not an integer"),
    ("flag_as_text", BASE + "- {name: c, outcome: block, missing_facts: 'yes'}\n", "rules[2].missing_facts", "not true or false"),
    ("rule_without_outcome", BASE + "- {name: c}\n", "rules[2].outcome", "required"),
    ("rules_not_a_list", "version: 1\nrules: {name: a}\n", "rules", "not a list"),
    ("rule_not_a_mapping", BASE + "- just-a-name\n", "rules[2]", "not a mapping"),
    ("version_as_text", "version: one\n", "version", "not an integer"),
    ("budget_cap_as_float", BASE.replace("cap: '100'", "cap: 100.0"), "budgets[0].cap", "not a decimal"),
    ("test_facts_not_a_mapping", BASE + "tests:\n- {name: t, facts: [crm], expect: auto}\n", "tests[0].facts", "not a mapping"),
    ("semantic_error_after_parsing", BASE + "- {name: c, outcome: review}\n", "rules[2].tiers", "required when outcome is review"),
    ("bad_test_fact", BASE + "tests:\n- {name: t, facts: {connector: crm, action: a, agent: b, amount: x}, expect: auto}\n",
     "tests[0].facts.amount", "not a decimal"),
    ("not_a_mapping", "- version: 1\n", "", "must be a YAML mapping"),
    ("invalid_yaml", "version: 1\nrules: [\n", "line 3", "invalid YAML"),
    ("duplicate_key", BASE + "- name: c\n  outcome: block\n  outcome: auto\n", "line 11", "duplicate key outcome"),
    ("reminder_past_the_sla", BASE + "- {name: c, outcome: review, tiers: [{group: finance, remind_at: 1.5}]}\n",
     "rules[2].tiers[0].remind_at", "from 0 (no reminder) to below 1"),
    ("signed_links_as_text", BASE + "- {name: c, outcome: review, tiers: [{group: finance, signed_links: 'yes'}]}\n",
     "rules[2].tiers[0].signed_links", "not true or false"),
    ("alias", BASE + "- &rule {name: c, outcome: block}\n- *rule\n", "line 10", "aliases"),
]


@pytest.mark.parametrize(("text", "path", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_load_error_names_the_field(text, path, message):
    with pytest.raises(MatrixError) as raised:
        load_matrix(text)
    assert raised.value.path == path
    assert message in raised.value.message


def test_unchecked_load_lets_validate_list_every_problem():
    spec = load_matrix(BASE + "- {name: c, outcome: review}\n- {name: a, outcome: nope}\n", check=False)
    assert {e.path for e in validate(spec)} == {"rules[2].tiers", "rules[3].name", "rules[3].outcome"}


def test_explicit_null_means_absent():
    assert load_matrix(BASE + "- {name: c, outcome: block, agents: null}\n").rules[2].agents is None


def test_dump_refuses_values_it_cannot_write_exactly():
    spec = MatrixSpec(version=1, default_outcome="block", rules=(Rule("r", "block", currency="USD", amount_min=1.5),))
    with pytest.raises(MatrixError) as raised:
        dump_matrix(spec)
    assert str(raised.value) == "rules[0].amount_min: not a decimal"


def test_a_tier_sets_its_reminder_and_signed_links_and_only_non_defaults_are_written():
    spec = load_matrix(BASE + "- {name: c, outcome: review, tiers: [{group: support, remind_at: 0.5, signed_links: true}]}\n")
    assert (spec.rules[2].tiers[0].remind_at, spec.rules[2].tiers[0].signed_links) == (0.5, True)
    assert spec.default_tiers[0].remind_at == 0.75 and not spec.default_tiers[0].signed_links
    text = dump_matrix(spec)
    assert "remind_at: 0.5" in text and "signed_links: true" in text and text.count("remind_at") == 1
    assert load_matrix(text) == spec
