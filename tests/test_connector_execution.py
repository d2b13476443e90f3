"""A proposal governed end to end through an HTTP connector: preview, approval, one write, rollback."""

from __future__ import annotations

import json

import pytest
from werkzeug import Request, Response

from approvals import execution
from approvals.models import Proposal, Status
from connectors.models import Connector, Execution
from approvals.rollback import rollback_proposal
from connectors.services import supported_actions
from tests.conftest import matrix_spec, reload, rule

TOKEN = "test-token-0123456789"

pytestmark = pytest.mark.matrix(matrix_spec(rule("billing-auto", "auto", connectors=["billing"])))


class Billing:
    """An in-house billing API: one invoice, PATCH to change it."""

    def __init__(self):
        self.invoice = {"id": "INV-1", "status": "open", "amount": "80.00"}
        self.writes: list[Request] = []

    def handle(self, request: Request) -> Response:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return Response(json.dumps({"error": "unauthorized"}), 401, content_type="application/json")
        if request.method == "PATCH":
            self.writes.append(request)
            self.invoice.update(request.get_json())
        return Response(json.dumps(self.invoice), 200, content_type="application/json")


@pytest.fixture
def billing(db, httpserver, monkeypatch):
    server = Billing()
    httpserver.expect_request("/api/invoice/INV-1").respond_with_handler(server.handle)
    monkeypatch.setenv("HITL_SECRET_TEST_BILLING_TOKEN", TOKEN)
    Connector.objects.create(
        slug="billing", name="Billing", kind="rest", credentials={"token": "env:HITL_SECRET_TEST_BILLING_TOKEN"},
        config={"base_url": httpserver.url_for("/").rstrip("/"), "record_url": "/api/{type}/{id}",
                "idempotency_header": "Idempotency-Key"},
    )
    return server


def void_invoice(submit) -> Proposal:
    """billing-bot asks to void invoice INV-1."""
    return submit(integration="billing-bot", connector="billing", action="update",
                  target={"type": "invoice", "id": "INV-1"}, changes={"status": "void"}, amount="80.00")


def test_the_connector_offers_only_the_actions_its_configuration_enables(billing):
    assert supported_actions(Connector.objects.get(slug="billing")) == ["update"]


def test_an_http_connector_previews_writes_once_with_the_key_and_keeps_no_secret(billing, submit):
    proposal = void_invoice(submit)
    assert proposal.preview["changes"] == [{"field": "status", "before": "open", "after": "void", "sensitive": False}]

    execution.run(proposal.pk)
    execution.run(proposal.pk)

    assert reload(proposal).status == Status.EXECUTED
    assert len(billing.writes) == 1
    write = billing.writes[0]
    assert write.get_json() == {"status": "void"}
    done = Execution.objects.get(proposal=proposal)
    assert write.headers["Idempotency-Key"] == done.idempotency_key
    assert TOKEN not in json.dumps([done.request, done.response])


def test_an_http_write_is_rolled_back_from_the_recorded_before_state(billing, submit, people):
    proposal = void_invoice(submit)
    execution.run(proposal.pk)

    rollback_proposal(proposal.pk, people.operator, "voided the wrong invoice")

    assert reload(proposal).status == Status.ROLLED_BACK
    assert billing.invoice["status"] == "open"
    assert [w.get_json() for w in billing.writes] == [{"status": "void"}, {"status": "open"}]
