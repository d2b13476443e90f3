"""A proposal governed end to end through an HTTP connector: preview, approval, one write, rollback."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from werkzeug import Request, Response

from approvals import execution, services
from approvals.models import Status
from connectors.models import Connector, Execution
from connectors.rollback import rollback_proposal
from connectors.services import supported_actions
from tests.conftest import matrix_spec, proposal_body, reload, rule

TOKEN = "test-token-0123456789"


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
def billing(httpserver, monkeypatch, publish, sandbox, people):
    server = Billing()
    httpserver.expect_request("/api/invoice/INV-1").respond_with_handler(server.handle)
    monkeypatch.setenv("HITL_SECRET_TEST_BILLING_TOKEN", TOKEN)
    Connector.objects.create(
        slug="billing", name="Billing", kind="rest", credentials={"token": "env:HITL_SECRET_TEST_BILLING_TOKEN"},
        config={"base_url": httpserver.url_for("/").rstrip("/"), "record_url": "/api/{type}/{id}",
                "idempotency_header": "Idempotency-Key"},
    )
    publish(matrix_spec(rule("billing-auto", "auto", connectors=["billing"])))
    return server


def submit(make_client) -> object:
    data = proposal_body(connector="billing", action="update", target={"type": "invoice", "id": "INV-1"},
                         changes={"status": "void"}, amount=Decimal("80.00"))
    proposal, _ = services.submit_proposal(make_client("billing-bot").integration, data)
    return proposal


def test_the_connector_offers_only_the_actions_its_configuration_enables(billing):
    assert supported_actions(Connector.objects.get(slug="billing")) == ["update"]


def test_an_http_connector_previews_writes_once_with_the_key_and_keeps_no_secret(billing, make_client):
    proposal = submit(make_client)
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


def test_an_http_write_is_rolled_back_from_the_recorded_before_state(billing, make_client, people):
    proposal = submit(make_client)
    execution.run(proposal.pk)

    rollback_proposal(proposal.pk, people.operator, "voided the wrong invoice")

    assert reload(proposal).status == Status.ROLLED_BACK
    assert billing.invoice["status"] == "open"
    assert [w.get_json() for w in billing.writes] == [{"status": "void"}, {"status": "open"}]
