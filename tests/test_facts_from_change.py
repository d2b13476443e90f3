"""The policy weighs what the change says, not only what the agent declares: money from the connector's
money fields (the larger of the two wins, a disagreement is a fact), customer-visible actions, the
connector's sensitive fields, and an approval bound to every declared fact it weighed."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied

from approvals import execution, services
from approvals.facts import change_hash
from approvals.models import Proposal, Status
from connectors.models import Connector
from tests.conftest import matrix_spec, proposal_body, reload, rule, sandbox_record, tier

URL = "/api/v1/proposals/"


def test_a_small_declared_amount_does_not_hide_a_large_refund(api, matrix):
    """amount 45.00 with refund_amount 9999.00 ran automatically and wrote 9,999."""
    body = proposal_body(idempotency_key="lie", amount="45.00", confidence=0.97,
                         changes={"status": "refunded", "refund_amount": "9999.00"})

    response = api.post(URL, data=json.dumps(body), content_type="application/json")

    assert response.status_code == 201
    proposal = Proposal.objects.get(pk=response.json()["id"])
    assert proposal.status == Status.TRIAGE and proposal.outcome == "triage"
    assert proposal.decision["rules"] == ["triage-amount-disagrees"]
    assert proposal.decision["facts"]["amount"] == "9999.00" and proposal.decision["facts"]["amount_mismatch"] is True
    assert sandbox_record("A-1001").data["refund_amount"] == "0.00"


def test_without_a_mismatch_rule_the_change_s_money_still_decides(submit, publish):
    publish(matrix_spec(
        rule("finance-over-1000", "review", actions=["refund"], currency="USD", amount_min=Decimal("1000"),
             tiers=(tier("finance", 2),)),
        rule("small-runs", "auto", actions=["refund"], currency="USD", amount_max=Decimal("100")),
    ))

    proposal = submit("understated", amount="45.00", changes={"status": "refunded", "refund_amount": "9999.00"})

    assert proposal.outcome == "review" and proposal.decision["rules"] == ["finance-over-1000"]
    assert (services.active_task(proposal).group.name, services.active_task(proposal).required) == ("finance", 2)


def test_an_honest_declaration_is_no_mismatch(submit):
    proposal = submit("honest", amount="45.00", confidence=0.97, changes={"status": "refunded", "refund_amount": "45.00"})

    assert proposal.decision["facts"]["amount_mismatch"] is False
    assert proposal.status == Status.APPROVED


def test_a_reviewer_who_raises_a_refund_to_5000_cannot_approve_it_alone(submit, people):
    proposal = submit("raised", amount="120.00", changes={"status": "refunded", "refund_amount": "120.00"})
    assert (services.active_task(proposal).group.name, services.active_task(proposal).required) == ("finance", 1)

    services.record_verdict(proposal.pk, people.finance1, "approve", "goodwill",
                            changes={"status": "refunded", "refund_amount": "5000.00"})

    proposal = reload(proposal)
    assert proposal.amount == Decimal("5000.00")  # the edited change's own money
    assert proposal.status == Status.PENDING_REVIEW
    task = services.active_task(proposal)
    assert (task.group.name, task.required) == ("finance", 2)
    with pytest.raises(PermissionDenied):
        services.record_verdict(proposal.pk, people.finance1, "approve")
    services.record_verdict(proposal.pk, people.finance2, "approve")
    assert reload(proposal).status == Status.PENDING_REVIEW  # still one finance approval short


def test_a_money_field_that_is_not_a_number_is_a_400_naming_it_and_stores_nothing(api, matrix):
    body = proposal_body(idempotency_key="nan", changes={"status": "refunded", "refund_amount": "lots"})

    response = api.post(URL, data=json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    assert "changes.refund_amount" in response.json()["errors"]
    assert not Proposal.objects.exists()


def test_a_board_extends_a_connector_s_money_fields(submit, sandbox):
    sandbox.helpdesk.config = {**sandbox.helpdesk.config, "money_fields": {"set_status": ["goodwill_credit"]}}
    sandbox.helpdesk.save()

    proposal = submit("credit-by-status", action="set_status", amount=None, currency="USD", confidence=0.97,
                      target={"type": "ticket", "id": "T-1001"}, changes={"status": "solved", "goodwill_credit": "700"})

    assert proposal.decision["facts"]["amount"] == "700" and proposal.decision["facts"]["amount_mismatch"] is True
    assert proposal.status == Status.TRIAGE


def test_a_customer_visible_action_weighs_at_least_medium_impact(submit, publish):
    publish(matrix_spec(rule("quiet-replies-run", "auto", actions=["public_reply"], impacts=["none", "low"])))

    proposal = submit("reply", action="public_reply", amount=None, currency=None, customer_impact="none",
                      target={"type": "ticket", "id": "T-1001"}, changes={"reply": "We refunded you."})

    assert proposal.decision["facts"]["customer_impact"] == "medium"
    assert proposal.outcome == "review"


def test_a_field_the_connector_calls_sensitive_counts_without_the_matrix_listing_it(submit, publish):
    publish(matrix_spec(rule("sensitive-to-sales", "review", touches_sensitive=True, tiers=(tier("sales"),)),
                        rule("rest-runs", "auto")))

    moved = submit("owner", action="update_opportunity", amount=None, currency=None, target={"type": "opportunity", "id": "O-1"},
                   changes={"owner": "eve"}, connector="crm")
    noted = submit("note", action="update_opportunity", amount=None, currency=None, target={"type": "opportunity", "id": "O-1"},
                   changes={"notes": "called"}, connector="crm")

    assert moved.decision["facts"]["sensitive"] == ["owner"] and moved.outcome == "review"
    assert noted.outcome == "auto"


def test_an_approval_is_bound_to_the_declared_facts_too(submit, people):
    """Raising the amount behind an approval (as history forms once allowed) stops the execution."""
    proposal = submit("bound", amount="500.00", changes={"status": "refunded", "refund_amount": "500.00"})
    services.record_verdict(proposal.pk, people.finance1, "approve")
    approved_hash = reload(proposal).approved_hash
    Proposal.objects.filter(pk=proposal.pk).update(confidence=0.99, customer_impact="none")

    result = execution.run(proposal.pk)

    proposal = reload(proposal)
    assert approved_hash != change_hash(proposal)
    assert result.status == "refused" and proposal.status == Status.FAILED
    assert "differs from the change that was approved" in proposal.status_reason
    assert sandbox_record("A-1001").data["refund_amount"] == "0.00"
