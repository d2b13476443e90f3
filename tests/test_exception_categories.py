"""Exception categories: set by the system when work does not go as proposed, or chosen by the reviewer."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from approvals import rollback, services
from ledger import categories
from ledger.models import Event, ExceptionCategory
from tests.conftest import matrix_spec, rule, tier

pytestmark = pytest.mark.matrix(matrix_spec(rule("refunds-finance", "review", actions=["refund"], tiers=(tier("finance"),))))


def last_event() -> Event:
    return Event.objects.order_by("-position").first()


def test_a_rejection_is_categorised_rejected_unless_the_reviewer_names_a_category(submit, people):
    plain, precise = submit(), submit()

    services.record_verdict(plain.pk, people.finance1, "reject", "no receipt")
    assert (last_event().category, last_event().subject) == ("rejected", str(plain.pk))
    services.record_verdict(precise.pk, people.finance1, "reject", "refund is twice the order", category="wrong_amount")
    assert (last_event().category, last_event().user) == ("wrong_amount", "finance1")


def test_failures_and_rollbacks_are_categorised_by_the_system(failed, executed, people):
    failed()
    assert any(e.category == "failed" for e in Event.objects.all())

    proposal = executed(record="A-1002")
    rollback.rollback_proposal(proposal.pk, people.operator, "customer complained")
    assert last_event().category == "rolled_back"


def test_an_unknown_category_is_refused_naming_the_field(submit, people):
    proposal = submit()

    with pytest.raises(ValidationError) as refused:
        services.record_verdict(proposal.pk, people.finance1, "reject", "no", category="whatever")
    assert "category" in refused.value.message_dict
    assert not proposal.reviews.exists()


def test_a_board_extends_the_vocabulary(submit, people):
    ExceptionCategory.objects.create(slug="fraud_suspected", label="Fraud suspected")
    proposal = submit()

    services.record_verdict(proposal.pk, people.finance1, "reject", "pattern of refunds", category="fraud_suspected")

    assert last_event().category == "fraud_suspected"
    assert categories.vocabulary()["fraud_suspected"] == "Fraud suspected"


def test_categories_are_counted_per_agent_and_action(submit, people):
    for category in ("wrong_amount", "wrong_amount", ""):
        services.record_verdict(submit().pk, people.finance1, "reject", "no", category=category)
    services.record_verdict(submit(agent="other-bot").pk, people.finance1, "reject", "no", category="duplicate")

    counted = {(r["agent"], r["action"], r["category"]): r["count"] for r in categories.by_agent_and_action()}
    assert counted == {("refund-bot", "refund", "wrong_amount"): 2, ("refund-bot", "refund", "rejected"): 1,
                       ("other-bot", "refund", "duplicate"): 1}


def test_the_api_takes_the_reviewers_category(submit, make_client, people):
    proposal = submit()
    reviewer = make_client("finance-desk", scopes=["decisions:write"], acts_for=people.finance1)

    response = reviewer.post(f"/api/v1/proposals/{proposal.pk}/decisions/", data=json.dumps(
        {"verdict": "reject", "reason": "wrong customer", "category": "wrong_target"}), content_type="application/json")
    assert response.status_code == 200, response.json()
    assert last_event().category == "wrong_target"

    refused = reviewer.post(f"/api/v1/proposals/{submit().pk}/decisions/", data=json.dumps(
        {"verdict": "reject", "reason": "x", "category": "nope"}), content_type="application/json")
    assert refused.status_code == 400 and "category" in refused.json()["errors"]
