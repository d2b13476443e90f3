"""The matrix editor a board member reads without code: rules as sentences, pickers, "any", tests as a table."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.test import Client

from policies.matrix_spec import Rule as SpecRule
from policies.matrix_text import sentence
from policies.models import ApprovalMatrix, MatrixStatus, Rule
from policies.services import new_draft
from tests.conftest import rule, tier
from tests.test_matrix_admin import form_data
from tests.test_matrix_yaml_commands import board_spec


def test_the_issues_example_rule_reads_as_one_sentence():
    big = rule("refunds-over-1000", "review", actions=["refund", "credit", "discount"], currency="USD",
               amount_min=Decimal("1000"), tiers=(tier("finance", 2, sla_minutes=240, escalation_group="finance-leads"),))

    assert sentence(big) == ("credit, discount or refund of 1,000 USD or more -> finance, 2 approvals, due in 4 h, "
                             "escalates to finance-leads")


def test_a_sentence_names_every_condition_and_what_happens():
    careful = rule("careful", "triage", agents=["crm-assistant"], connectors=["crm"], confidence_min=0.5,
                   confidence_max=0.9, impacts=["high"], touches_sensitive=False, fields_any=["iban"])

    assert sentence(careful) == ("any action by crm-assistant on crm with confidence from 0.5 to below 0.9 "
                                 "with high customer impact changing iban touching no sensitive field -> held for triage")


def test_a_condition_the_renderer_has_no_phrase_for_is_still_shown():
    @dataclass(frozen=True)
    class LaterRule(SpecRule):
        needs_legal_hold: bool | None = None

    later = LaterRule(name="legal", outcome="block", actions=frozenset({"delete_record"}), needs_legal_hold=True)

    assert sentence(later) == "delete_record needs legal hold True -> blocked"


@pytest.fixture
def board_client(people):
    client = Client()
    client.force_login(people.board1)
    return client


@pytest.fixture
def draft(people, sandbox, publish):
    return new_draft(publish(board_spec()), people.board1)


def test_the_matrix_page_lists_rules_as_sentences_with_their_tiers(board_client, draft):
    page = board_client.get(f"/admin/policies/approvalmatrix/{draft.pk}/change/").content.decode()

    assert "credit or refund of 1,000 USD or more -&gt; finance, 2 approvals, due in 4 h" in page
    assert 'name="rules-0-connectors"' not in page  # conditions are edited on the rule's page, not in a 12-column table


def test_a_rules_pickers_offer_the_connectors_actions_and_say_any(board_client, draft):
    finance = draft.rules.get(name="finance-large-refunds")

    page = board_client.get(f"/admin/policies/rule/{finance.pk}/change/").content.decode()

    assert 'type="checkbox" name="actions" value="update_account"' in page  # the CRM connector offers it
    assert 'type="checkbox" name="connectors" value="helpdesk"' in page
    assert '<option value="unknown" selected>any</option>' in page and "Unknown" not in page


def test_ticking_actions_and_typing_a_new_agent_saves_the_rule(board_client, draft):
    finance = draft.rules.get(name="finance-large-refunds")
    page = board_client.get(f"/admin/policies/rule/{finance.pk}/change/")
    data = form_data(page)
    data.update(actions=["refund", "discount"], agents=[], other_agents="refund-bot, new-bot")

    response = board_client.post(f"/admin/policies/rule/{finance.pk}/change/", data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    finance.refresh_from_db()
    assert (finance.actions, finance.agents) == ("discount,refund", "new-bot,refund-bot")


def test_embedded_tests_are_edited_as_a_table(board_client, draft):
    page = board_client.get(f"/admin/policies/approvalmatrix/{draft.pk}/change/").content.decode()
    assert 'id="test-cases"' in page and "amount: &#x27;1500.00&#x27;" in page

    rows = len(draft.tests) + 2
    data = {"name": draft.name, "default_outcome": draft.default_outcome, "notes": "", "sensitive_fields": "",
            "required_facts": "", "tests-rows": rows, "default_max_age_minutes": draft.default_max_age_minutes,
            "info_wait_minutes": draft.info_wait_minutes,
            "tiers-TOTAL_FORMS": 0, "tiers-INITIAL_FORMS": 0, "rules-TOTAL_FORMS": 0, "rules-INITIAL_FORMS": 0,
            "budgets-TOTAL_FORMS": 0, "budgets-INITIAL_FORMS": 0}
    data.update({"tests-0-name": "one-refund", "tests-0-expect": "review", "tests-0-rules": "finance-large-refunds",
                 "tests-0-facts": "connector: helpdesk\naction: refund\nagent: refund-bot\namount: 2000\ncurrency: USD"})
    response = board_client.post(f"/admin/policies/approvalmatrix/{draft.pk}/change/", data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    draft.refresh_from_db()
    assert draft.tests == [{"name": "one-refund", "expect": "review", "expect_rules": ["finance-large-refunds"],
                            "facts": {"connector": "helpdesk", "action": "refund", "agent": "refund-bot",
                                      "amount": "2000.00", "currency": "USD"}}]


def test_a_test_row_with_broken_facts_is_refused_naming_the_test(board_client, draft):
    before = draft.tests
    data = {"name": draft.name, "default_outcome": draft.default_outcome, "tests-rows": 1,
            "tests-0-name": "broken", "tests-0-expect": "auto", "tests-0-facts": "connector: [unclosed",
            "tiers-TOTAL_FORMS": 0, "tiers-INITIAL_FORMS": 0, "rules-TOTAL_FORMS": 0, "rules-INITIAL_FORMS": 0,
            "budgets-TOTAL_FORMS": 0, "budgets-INITIAL_FORMS": 0}

    response = board_client.post(f"/admin/policies/approvalmatrix/{draft.pk}/change/", data)

    assert response.status_code == 200
    assert "test broken: facts: not" in str(response.context["adminform"].form.errors["tests"])
    draft.refresh_from_db()
    assert draft.tests == before


def test_a_published_version_shows_its_tests_as_a_table_and_the_author_read_only(board_client, draft):
    live = ApprovalMatrix.objects.get(status=MatrixStatus.PUBLISHED)

    page = board_client.get(f"/admin/policies/approvalmatrix/{live.pk}/change/").content.decode()

    assert 'id="test-cases"' in page and "large-refund-goes-to-finance" in page
    assert 'name="author"' not in page and 'name="tests"' not in page


def test_the_kill_switch_changelist_says_kill_switches(board_client, db):
    page = board_client.get("/admin/policies/killswitch/").content.decode()

    assert "0 kill switches" in page and "switchs" not in page


def test_the_rule_list_reads_as_sentences(board_client, draft):
    page = board_client.get(f"/admin/policies/rule/?matrix__id__exact={draft.pk}").content.decode()

    assert "send_email -&gt; support, 1 approval, due in 4 h" in page
    assert Rule.objects.filter(matrix=draft).count() == 6
