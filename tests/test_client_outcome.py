"""Actions the integration carries out itself: approved proposals wait for its outcome report
(POST /api/v1/proposals/{id}/outcome/), accepted once per approval and only from the submitter."""

from __future__ import annotations

import json

import pytest

from approvals import execution, outbox, services
from approvals.models import OutboxMessage, Proposal, Status
from connectors.models import Execution
from tests.conftest import approve_all, reload, tools_spec

pytestmark = [pytest.mark.matrix(tools_spec())]

INVOICE = {"connector": "agent-tools", "action": "send_invoice", "target": {"type": "invoice", "id": "INV-7"},
           "changes": {"to": "ada@example.com", "total": "80.00"}, "amount": None, "currency": None}


@pytest.fixture
def invoice(submit, agent_tools, people):
    """An invoice the support reviewer approved: it waits for the integration's report."""
    proposal = submit("invoice-7", **INVOICE)
    assert proposal.status == Status.PENDING_REVIEW, proposal.status_reason
    approve_all(proposal, people)
    return reload(proposal)


def _report(client, proposal, **body):
    return client.post(f"/api/v1/proposals/{proposal.pk}/outcome/", data=json.dumps(body), content_type="application/json")


def _client_of(make_client, proposal):
    return make_client(proposal.integration.name)


def test_approved_client_action_waits_for_the_report_without_queuing_a_worker(invoice):
    assert invoice.status == Status.APPROVED
    assert not OutboxMessage.objects.filter(proposal=invoice).exists()
    assert execution.run(invoice.pk).status.startswith("nothing to do")
    assert reload(invoice).status == Status.APPROVED and not invoice.executions.exists()


def test_reported_success_ends_executed_with_the_result_on_an_execution(invoice, make_client):
    response = _report(_client_of(make_client, invoice), invoice, ok=True, result={"sent_id": "m-1"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "executed"
    assert body["execution"]["result"] == {"sent_id": "m-1"} and body["execution"]["outcome"] == "succeeded"
    row = Execution.objects.get(proposal=invoice)
    assert row.response == {"sent_id": "m-1"} and row.request["reported_by"] == invoice.integration.name
    assert reload(invoice).history.first().history_change_reason.startswith("outcome reported by integration")


def test_reported_failure_ends_failed_with_the_error(invoice, make_client):
    response = _report(_client_of(make_client, invoice), invoice, ok=False, error="SMTP refused")
    assert response.status_code == 200
    assert response.json()["status"] == "failed"
    assert reload(invoice).status_reason == "the integration reported a failure: SMTP refused"
    assert Execution.objects.get(proposal=invoice).outcome == Execution.Outcome.FAILED


def test_a_second_report_is_a_conflict_and_changes_nothing(invoice, make_client):
    client = _client_of(make_client, invoice)
    assert _report(client, invoice, ok=True, result={"n": 1}).status_code == 200
    again = _report(client, invoice, ok=False, error="oops")
    assert again.status_code == 409
    assert "already reported" in again.json()["errors"]["status"][0]
    assert reload(invoice).status == Status.EXECUTED and Execution.objects.filter(proposal=invoice).count() == 1


def test_another_integration_cannot_report(invoice, make_client):
    response = _report(make_client("someone-else"), invoice, ok=True)
    assert response.status_code == 404
    assert reload(invoice).status == Status.APPROVED


def test_a_proposal_still_in_review_cannot_be_reported(submit, agent_tools, make_client):
    proposal = submit("invoice-8", **INVOICE)
    response = _report(_client_of(make_client, proposal), proposal, ok=True)
    assert response.status_code == 409
    assert reload(proposal).status == Status.PENDING_REVIEW


def test_a_worker_executed_connector_refuses_reports(approved, make_client):
    proposal = approved("refund-1", connector="helpdesk")
    response = _report(_client_of(make_client, proposal), proposal, ok=True)
    assert response.status_code == 409
    assert "executed by HITL Gov" in response.json()["errors"]["status"][0]


@pytest.mark.parametrize("body, field", [({}, "ok"), ({"ok": "maybe"}, "ok"), ({"ok": True, "result": [1]}, "result"),
                                         ({"ok": True, "extra": 1}, "extra"), ({"ok": False, "error": "a\u0000b"}, "error")])
def test_bad_reports_name_the_field_and_store_nothing(invoice, make_client, body, field):
    response = _report(_client_of(make_client, invoice), invoice, **body)
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert reload(invoice).status == Status.APPROVED and not invoice.executions.exists()


def test_an_operator_retry_after_a_reported_failure_takes_one_more_report(invoice, make_client, people):
    client = _client_of(make_client, invoice)
    _report(client, invoice, ok=False, error="timeout")
    services.retry_execution(invoice.pk, people.operator, "try again")
    assert reload(invoice).status == Status.APPROVED
    assert _report(client, invoice, ok=True, result={"second": True}).status_code == 200
    assert list(invoice.executions.values_list("attempt", "outcome")) == [(1, "failed"), (2, "succeeded")]


def test_the_sweep_does_not_resend_client_approvals(invoice, settings):
    settings.EXECUTION_DISPATCH_GRACE_SECONDS = 0
    Proposal.objects.filter(pk=invoice.pk).update(updated_at=invoice.updated_at.replace(year=2020))
    assert str(invoice.pk) not in outbox.unstarted_approvals()
