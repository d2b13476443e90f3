"""The whole path against real parts: API, policy, admin approval, a Celery worker, the sandbox."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from approvals.models import Proposal, Status
from connectors.models import Execution, SandboxRecord
from tests.conftest import SMALL_REFUND, proposal_body, reload, wait_until
from tests.connector_fakes import SlowSandboxAdapter

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def approve_in_admin(user, proposal_id) -> None:
    browser = Client()
    browser.force_login(user)
    page = browser.get(f"/admin/approvals/proposal/{proposal_id}/change/")
    assert page.status_code == 200
    assert b"Approve" in page.content and b"refund_amount" in page.content
    response = browser.post(f"/admin/approvals/proposal/{proposal_id}/decide/", {"verdict": "approve", "reason": "checked photo"})
    assert response.status_code == 302


def test_api_to_admin_approval_to_worker_execution_changes_the_record_and_its_history(
    api, demo_matrix, people, start_worker
):
    start_worker()
    response = api.post("/api/v1/proposals/", data=json.dumps(proposal_body()), content_type="application/json")
    assert response.status_code == 201
    proposal_id = response.json()["id"]
    assert response.json()["status"] == "pending_review"
    reviewer = people.make("e2e-reviewer", response.json()["review"]["tiers"][0]["group"])

    approve_in_admin(reviewer, proposal_id)

    executed = wait_until(lambda: api.get(f"/api/v1/proposals/{proposal_id}/").json()["status"] == "executed",
                          message="the worker to execute the approved proposal")
    assert executed
    record = SandboxRecord.objects.get(type="order", record_id="A-1001")
    assert record.data["status"] == "refunded" and record.data["refund_amount"] == "120.00"
    newest, before = record.history.all()[:2]
    delta = newest.diff_against(before)
    assert [change.field for change in delta.changes] == ["data"]
    assert delta.changes[0].old["refund_amount"] == "0.00" and delta.changes[0].new["refund_amount"] == "120.00"
    statuses = list(Proposal.history.filter(id=proposal_id).order_by("history_date").values_list("status", flat=True))
    assert statuses[-3:] == ["approved", "executing", "executed"]
    approval = Proposal.history.filter(id=proposal_id, status="approved").get()
    assert approval.history_user == reviewer and "checked photo" in approval.history_change_reason
    body = api.get(f"/api/v1/proposals/{proposal_id}/").json()
    assert body["execution"]["outcome"] == "succeeded" and body["execution"]["after"]["status"] == "refunded"


def test_an_auto_approved_proposal_is_executed_by_the_worker(api, demo_matrix, start_worker):
    start_worker()
    body = proposal_body(idempotency_key="small", amount="40.00", changes={"status": "refunded", "refund_amount": "40.00"},
                         target={"type": "order", "id": "A-1002"}, confidence=0.97)
    created = api.post("/api/v1/proposals/", data=json.dumps(body), content_type="application/json").json()
    assert created["decision"]["outcome"] == "auto", created["decision"]

    wait_until(lambda: reload(Proposal.objects.get(pk=created["id"])).status == Status.EXECUTED, message="auto execution")
    assert SandboxRecord.objects.get(record_id="A-1002").data["refund_amount"] == "40.00"
    assert Execution.objects.filter(proposal_id=created["id"], outcome="succeeded").count() == 1


def test_a_worker_killed_mid_write_does_not_write_twice(api, demo_matrix, sandbox, start_worker):
    """The worker dies after the system applied the write but before it answered; beat resumes
    the execution on another worker, which re-reads the record, sees the write and finishes."""
    sandbox.helpdesk.kind = SlowSandboxAdapter.kind
    sandbox.helpdesk.config = {**sandbox.helpdesk.config, "response_delay_seconds": 30}
    sandbox.helpdesk.save()
    worker = start_worker(EXECUTION_LEASE_SECONDS="2", CONNECTOR_PLUGINS="tests.connector_fakes")
    body = proposal_body(idempotency_key="crash", amount="40.00", changes={"status": "refunded", "refund_amount": "40.00"},
                         target={"type": "order", "id": "A-1003"}, confidence=0.97)
    created = api.post("/api/v1/proposals/", data=json.dumps(body), content_type="application/json").json()
    record = SandboxRecord.objects.get(record_id="A-1003")
    wait_until(lambda: reload(record).data["refund_amount"] == "40.00", message="the sandbox write")
    worker.kill()
    assert Proposal.objects.get(pk=created["id"]).status == Status.EXECUTING, Proposal.objects.get(pk=created["id"]).status_reason
    writes = record.history.count()

    start_worker(beat=True, EXECUTION_LEASE_SECONDS="2", EXECUTION_RESUME_GRACE_SECONDS="0", SWEEP_INTERVAL_SECONDS="1",
                 CONNECTOR_PLUGINS="tests.connector_fakes")

    wait_until(lambda: Proposal.objects.get(pk=created["id"]).status == Status.EXECUTED, message="recovery after the crash")
    assert record.history.count() == writes
    executions = list(Execution.objects.filter(proposal_id=created["id"]).order_by("id"))
    assert [e.outcome for e in executions] == ["started", "succeeded"]
    assert executions[-1].response == {"already_written": True}


@pytest.mark.parametrize("max_age, later_tasks_find", [("60", "open"), ("0", "closed")])
def test_a_worker_keeps_its_database_connection_between_tasks_for_as_long_as_conn_max_age(
    api, demo_matrix, sandbox, start_worker, tmp_path, max_age, later_tasks_find,
):
    """Celery's Django fixup closed it around every task, so each execution connected anew."""
    notes = tmp_path / "connections"
    start_worker(CONNECTOR_PLUGINS="tests.worker_connections", HITL_TEST_CONNECTIONS_FILE=notes, DB_CONN_MAX_AGE=max_age)
    for n, record in enumerate(("A-1001", "A-1002", "A-1003")):
        body = proposal_body(idempotency_key=f"reuse-{n}", target={"type": "order", "id": record}, **SMALL_REFUND)
        created = api.post("/api/v1/proposals/", data=json.dumps(body), content_type="application/json").json()
        wait_until(lambda: Proposal.objects.get(pk=created["id"]).status == Status.EXECUTED, message=f"execution {n}")
    # A redelivered execution (the outbox's resend of work still approved after the grace) starts a task too.
    later = notes.read_text().split()[1:]
    assert len(later) >= 2 and set(later) == {later_tasks_find}, later
