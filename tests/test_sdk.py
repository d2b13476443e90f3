"""The Python SDK (clients/python/hitlgov_client) against the live product: submit, wait, the
@governed decorator (edit-then-approve seen by the function, rejection and blocking raise) and
signed callback events verified, tampered and replayed ones refused.

Reviewers act while the client waits: the client's injectable `sleep` is where a test lets a
person decide, so no test waits on a clock.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command

import hitlgov_client as sdk
from approvals import services
from approvals.models import Proposal, Status
from connectors.models import Execution
from tests.conftest import tools_spec, wait_until

pytestmark = [pytest.mark.matrix(tools_spec())]


@dataclass(frozen=True)
class Invoice:
    id: str
    to: str
    total: Decimal


@pytest.fixture
def agent(make_client, live_server, agent_tools, matrix, people):
    """The SDK's client for an integration, pointed at the live server; `decide` runs at each poll's pause."""
    api = make_client("invoice-bot")
    pauses: list[float] = []
    decisions: list = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if decisions:
            decisions.pop(0)()

    client = sdk.Client(live_server.url, api.raw_key, agent="invoice-bot", sleep=sleep)
    client.pauses, client.decisions, client.integration = pauses, decisions, api.integration
    yield client
    client.close()


def only_proposal() -> Proposal:
    (proposal,) = Proposal.objects.all()
    return proposal


def test_submit_then_wait_returns_the_verdict_typed(agent):
    submitted = agent.submit("agent-tools", "lookup_invoice", idempotency_key="look-1", confidence=0.9,
                             changes={"invoice": "INV-1"})
    assert isinstance(submitted, sdk.Proposal) and submitted.decision.outcome == "auto"
    waited = agent.wait(submitted.id, timeout=30, until=sdk.DECIDED)
    assert waited.status == "approved" and waited.decision.rule == "look-ups-run-alone"
    again = agent.submit("agent-tools", "lookup_invoice", idempotency_key="look-1", confidence=0.9,
                         changes={"invoice": "INV-1"})
    assert again.id == submitted.id


def test_bad_input_raises_with_the_field_errors(agent):
    with pytest.raises(sdk.ValidationError) as caught:
        agent.submit("no-such-connector", "lookup_invoice", idempotency_key="bad-1", confidence=2)
    assert caught.value.status == 400
    assert set(caught.value.errors) == {"connector", "confidence"}
    assert not Proposal.objects.exists()


def test_an_unknown_key_raises_authentication_error(live_server):
    with pytest.raises(sdk.AuthenticationError):
        sdk.Client(live_server.url, "hitl_not-a-key").get("00000000-0000-0000-0000-000000000000")


def test_governed_function_runs_with_the_arguments_a_reviewer_edited(agent, people):
    calls = []

    @sdk.governed(agent, connector="agent-tools", action="send_invoice", target=lambda inv: ("invoice", inv.id))
    def send_invoice(inv: Invoice) -> dict:
        calls.append(inv)
        return {"message_id": f"m-{inv.id}", "total": str(inv.total)}

    def edit() -> None:  # support1 corrects the total; an edit goes back to review
        edited = {"inv": {"id": "INV-7", "to": "ada@example.com", "total": "75.00"}}
        services.record_verdict(only_proposal().pk, people.support1, "approve", changes=edited)

    def approve() -> None:
        services.record_verdict(only_proposal().pk, people.make("support2", "support"), "approve")

    agent.decisions.extend([edit, approve])
    result = send_invoice(Invoice("INV-7", "ada@example.com", Decimal("80.00")))

    assert calls == [Invoice("INV-7", "ada@example.com", "75.00")]
    assert result == {"message_id": "m-INV-7", "total": "75.00"}
    proposal = only_proposal()
    assert proposal.status == Status.EXECUTED and proposal.edited
    assert (proposal.target_type, proposal.target_id) == ("invoice", "INV-7")
    assert Execution.objects.get(proposal=proposal).response == result
    assert len(agent.pauses) >= 2


def test_governed_function_that_fails_reports_the_failure(agent, people):
    @sdk.governed(agent, connector="agent-tools", action="send_invoice", target=lambda inv: ("invoice", inv.id))
    def send_invoice(inv: Invoice) -> None:
        raise ConnectionError("mail server down")

    agent.decisions.append(lambda: services.record_verdict(only_proposal().pk, people.support1, "approve"))
    with pytest.raises(ConnectionError):
        send_invoice(Invoice("INV-8", "bob@example.com", Decimal("10.00")))
    proposal = only_proposal()
    assert proposal.status == Status.FAILED
    assert proposal.status_reason == "the integration reported a failure: ConnectionError: mail server down"


def test_rejected_call_raises_and_the_function_never_runs(agent, people):
    calls = []

    @sdk.governed(agent, connector="agent-tools", action="send_invoice", target=lambda inv: ("invoice", inv.id))
    def send_invoice(inv: Invoice) -> None:
        calls.append(inv)

    agent.decisions.append(lambda: services.record_verdict(only_proposal().pk, people.support1, "reject", "wrong customer"))
    with pytest.raises(sdk.ProposalRejected, match="wrong customer") as caught:
        send_invoice(Invoice("INV-9", "eve@example.com", Decimal("99.00")))
    assert calls == [] and caught.value.proposal.status == "rejected"
    assert not Execution.objects.exists()


def test_blocked_call_raises_with_the_policy_reasons(agent):
    @sdk.governed(agent, connector="agent-tools", action="wipe_customer", target=lambda cid: ("customer", cid))
    def wipe_customer(cid: str) -> None:
        raise AssertionError("must not run")

    with pytest.raises(sdk.ProposalBlocked) as caught:
        wipe_customer("C-1")
    assert caught.value.proposal.decision.rule == "wiping-is-blocked"
    assert agent.pauses == []


def test_async_governed_function_runs_once_approved(agent, live_server):
    async def main() -> dict:
        async with sdk.AsyncClient(live_server.url, agent.api_key, agent="invoice-bot") as client:
            @sdk.governed(client, connector="agent-tools", action="lookup_invoice")
            async def lookup_invoice(number: str) -> dict:
                return {"number": number, "paid": True}

            return await lookup_invoice("INV-3")

    assert asyncio.run(main()) == {"number": "INV-3", "paid": True}
    assert only_proposal().status == Status.EXECUTED


# ---- signed callback events ---------------------------------------------------------------------

@pytest.fixture
def signed_event(agent, httpserver):
    """A real event the product signed and sent to a local receiver: (body bytes, headers, secret)."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    out = io.StringIO()
    call_command("signing_secret", agent.integration.name, stdout=out)
    secret = out.getvalue().strip().splitlines()[-1]
    agent.submit("agent-tools", "send_invoice", idempotency_key="hooked", confidence=0.9, target=("invoice", "INV-5"),
                 changes={"to": "x@example.com"}, callback_url=httpserver.url_for("/hook"))
    wait_until(lambda: httpserver.log, timeout=30, message="the decided event")
    request = httpserver.log[0][0]
    return request.get_data(), dict(request.headers), secret


def test_a_genuine_event_verifies(signed_event):
    body, headers, secret = signed_event
    event = sdk.verify_event(body, headers, secret)
    assert event.event == "proposal.decided" and event.proposal.status == "pending_review"
    assert event.delivery == headers["X-Hitl-Delivery"]


def test_a_tampered_or_replayed_event_is_refused(signed_event):
    body, headers, secret = signed_event
    with pytest.raises(sdk.EventVerificationError, match="signature"):
        sdk.verify_event(body.replace(b"pending_review", b"approved"), headers, secret)
    with pytest.raises(sdk.EventVerificationError, match="signature"):
        sdk.verify_event(body, headers, "another-secret")
    occurred = sdk.verify_event(body, headers, secret).occurred_at
    with pytest.raises(sdk.EventVerificationError, match="replay"):
        sdk.verify_event(body, headers, secret, now=occurred + timedelta(minutes=6))
    seen: set[str] = set()
    sdk.verify_event(body, headers, secret, seen=seen)
    with pytest.raises(sdk.EventVerificationError, match="already handled"):
        sdk.verify_event(body, headers, secret, seen=seen)


# ---- against a scripted server: what the client sends and how it paces itself ------------------

PENDING = {"id": "p-1", "status": "pending_review", "agent": "a", "connector": "c", "action": "x", "changes": {},
           "review": {"tiers": [{"state": "active", "due_at": "2026-12-02T12:00:00Z"}]}}


def test_wait_honours_retry_after_and_backs_off(httpserver):
    httpserver.expect_ordered_request("/api/v1/proposals/p-1/").respond_with_json(PENDING)
    httpserver.expect_ordered_request("/api/v1/proposals/p-1/").respond_with_json(
        {"errors": {"detail": ["slow down"]}, "detail": "slow down"}, status=429, headers={"Retry-After": "7"})
    httpserver.expect_ordered_request("/api/v1/proposals/p-1/").respond_with_json(PENDING)
    httpserver.expect_ordered_request("/api/v1/proposals/p-1/").respond_with_json({**PENDING, "status": "executed"})
    pauses: list[float] = []
    client = sdk.Client(httpserver.url_for("/"), "k", sleep=pauses.append, backoff=sdk.Backoff(first=1, factor=2, most=4))
    proposal = client.wait("p-1", timeout=60)
    assert proposal.status == "executed"
    assert len(pauses) == 3
    assert 0.5 <= pauses[0] <= 1 and pauses[1] == 7 and 2 <= pauses[2] <= 4


def test_wait_gives_up_at_its_timeout_with_the_last_status(httpserver):
    httpserver.expect_request("/api/v1/proposals/p-1/").respond_with_json(PENDING)
    now = [0.0]
    client = sdk.Client(httpserver.url_for("/"), "k", sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    with pytest.raises(sdk.WaitTimeout) as caught:
        client.wait("p-1", timeout=20)
    assert caught.value.proposal.status == "pending_review" and now[0] <= 20
    assert caught.value.proposal.due_at.isoformat() == "2026-12-02T12:00:00+00:00"


def test_answer_info_sends_the_contract_request(httpserver):
    """The info endpoint is another helper's (issue 9): this checks the request the contract describes."""
    httpserver.expect_request(
        "/api/v1/proposals/p-1/info/", method="POST", headers={"Authorization": "Bearer k"},
        json={"answer": "the customer confirmed", "evidence": [{"title": "mail"}], "changes": {"total": "70.00"}},
    ).respond_with_json(PENDING)
    proposal = sdk.Client(httpserver.url_for("/"), "k").answer_info(
        "p-1", "the customer confirmed", evidence=[{"title": "mail"}], changes={"total": "70.00"})
    assert proposal.status == "pending_review"
    httpserver.check_assertions()
