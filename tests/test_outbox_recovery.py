"""No approved work is lost, against real workers on the real broker: a worker killed between
fetching an execution and claiming it, a broker down while a person approves, a broker down
when a callback event is recorded. Beat's sweep finishes every one, writing exactly once."""

from __future__ import annotations

import json
import re
import time

import pytest
from django.test import Client

from approvals import outbox
from approvals.models import CallbackDelivery, OutboxMessage, Proposal, Status
from approvals.tasks import execute_proposal
from connectors.models import Execution, SandboxRecord
from tests.broker_outage import broker_down
from tests.conftest import proposal_body, wait_until

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SWEEPING = {"beat": True, "SWEEP_INTERVAL_SECONDS": "1", "EXECUTION_DISPATCH_GRACE_SECONDS": "1"}


def auto_body(key: str, order: str) -> dict:
    """A small, confident refund the demo matrix runs without review."""
    return proposal_body(idempotency_key=key, amount="40.00", confidence=0.97, target={"type": "order", "id": order},
                         changes={"status": "refunded", "refund_amount": "40.00"})


def post_proposal(api, body: dict) -> dict:
    response = api.post("/api/v1/proposals/", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()


def writes_to(order: str) -> int:
    """How many times the sandbox record was written (one history row each, after its creation)."""
    return SandboxRecord.objects.get(type="order", record_id=order).history.count() - 1


def finished(worker, task: str) -> int:
    return len(re.findall(rf"Task {re.escape(task)}\[[^\]]+\] succeeded", worker.output()))


def wait_for_sweeps(worker, count: int) -> None:
    """Let beat's sweep run `count` more times, so a duplicate it might send would have run too."""
    target = finished(worker, "approvals.tasks.sweep_overdue_reviews") + count
    wait_until(lambda: finished(worker, "approvals.tasks.sweep_overdue_reviews") >= target, message=f"{count} more sweeps")


def execution_message(proposal_id: str) -> OutboxMessage:
    (message,) = OutboxMessage.objects.filter(proposal_id=proposal_id, task=outbox.EXECUTE)
    return message


@pytest.mark.parametrize("point", ["received", "started", "claiming"])
def test_a_worker_killed_between_fetch_and_claim_leaves_work_beat_executes_exactly_once(
    point, api, demo_matrix, start_worker, tmp_path
):
    paused = tmp_path / "paused"
    doomed = start_worker(CONNECTOR_PLUGINS="tests.worker_pauses", HITL_TEST_PAUSE_AT=point, HITL_TEST_PAUSE_FILE=paused)
    created = post_proposal(api, auto_body(f"killed-{point}", "A-1002"))
    assert created["status"] == "approved"
    wait_until(paused.exists, message=f"the worker to pause at {point}")
    doomed.kill()

    assert Proposal.objects.get(pk=created["id"]).status == Status.APPROVED
    assert not Execution.objects.filter(proposal_id=created["id"]).exists()
    assert execution_message(created["id"]).sent_at is not None  # the broker had it; the worker lost it
    assert writes_to("A-1002") == 0

    sweeper = start_worker(**SWEEPING)
    wait_until(lambda: Proposal.objects.get(pk=created["id"]).status == Status.EXECUTED, message="beat to execute it")
    wait_for_sweeps(sweeper, 3)

    assert writes_to("A-1002") == 1
    assert list(Execution.objects.filter(proposal_id=created["id"]).values_list("outcome", flat=True)) == ["succeeded"]
    message = execution_message(created["id"])
    assert message.attempts >= 2 and "never started" in message.last_error


def test_duplicate_execution_messages_on_two_workers_write_once(api, demo_matrix, start_worker):
    created = post_proposal(api, auto_body("duplicated", "A-1003"))
    for _ in range(6):  # with the one sent after the approval: seven deliveries of the same execution
        execute_proposal.delay(created["id"])
    workers = [start_worker(), start_worker()]

    done = lambda: sum(finished(w, "approvals.tasks.execute_proposal") for w in workers)  # noqa: E731
    wait_until(lambda: done() == 7, message="all seven deliveries to be handled")

    assert Proposal.objects.get(pk=created["id"]).status == Status.EXECUTED
    assert writes_to("A-1003") == 1
    assert Execution.objects.filter(proposal_id=created["id"]).count() == 1
    answers = [a for w in workers for a in re.findall(r"execute_proposal\[[^\]]+\] succeeded in [\d.]+s: '([^']*)'", w.output())]
    assert answers.count("executed") == 1
    assert all(a == "busy" or a.startswith("nothing to do: execut") for a in answers if a != "executed"), answers


def test_an_approval_while_the_broker_is_down_answers_and_runs_once_the_broker_is_back(
    api, demo_matrix, people, start_worker
):
    created = post_proposal(api, proposal_body(idempotency_key="outage"))  # 120.00: finance reviews it
    assert created["status"] == "pending_review"
    reviewer = people.make("outage-reviewer", created["review"]["tiers"][0]["group"])
    browser = Client()
    browser.force_login(reviewer)

    with broker_down():
        started = time.monotonic()
        response = browser.post(f"/admin/approvals/proposal/{created['id']}/decide/", {"verdict": "approve", "reason": "ok"})
        took = time.monotonic() - started

    assert response.status_code == 302 and took < 5
    assert Proposal.objects.get(pk=created["id"]).status == Status.APPROVED
    message = execution_message(created["id"])
    assert message.sent_at is None and message.attempts == 1 and message.last_error

    start_worker(**SWEEPING)
    wait_until(lambda: Proposal.objects.get(pk=created["id"]).status == Status.EXECUTED, message="execution after the outage")
    assert writes_to("A-1001") == 1
    assert Execution.objects.filter(proposal_id=created["id"]).count() == 1
    message.refresh_from_db()
    assert message.sent_at is not None and message.attempts == 2


def test_a_callback_event_recorded_while_the_broker_is_down_is_delivered_later(
    api, demo_matrix, start_worker, httpserver
):
    httpserver.expect_request("/outage-hook", method="POST").respond_with_data("ok")
    body = proposal_body(idempotency_key="outage-callback", callback_url=httpserver.url_for("/outage-hook"))

    with broker_down():
        created = post_proposal(api, body)

    (delivery,) = CallbackDelivery.objects.filter(proposal_id=created["id"])
    assert delivery.state == CallbackDelivery.State.PENDING and delivery.attempts == 0

    start_worker(**SWEEPING)
    wait_until(lambda: CallbackDelivery.objects.get(pk=delivery.pk).state == CallbackDelivery.State.DELIVERED,
               message="the delivery after the outage")
    sent = [request for request, _ in httpserver.log if request.path == "/outage-hook"]
    assert [request.headers["X-HITL-Delivery"] for request in sent] == [str(delivery.pk)]
    assert json.loads(sent[0].get_data())["event"] == "proposal.decided"
