"""Rolling back executed proposals: the record is restored only when nothing changed it since."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone
from werkzeug import Request

from approvals import execution, operations
from approvals.models import Proposal, Status
from approvals import rollback
from connectors.adapters.base import PermanentError
from connectors.adapters.sandbox import SandboxAdapter
from connectors.models import Connector, Execution, RollbackBatch
from tests.conftest import approve_all, matrix_spec, proposal_body, reload, rule, sandbox_record, wait_until
from tests.connector_fakes import json_response


def change_record(record_id: str, **fields) -> None:
    row = sandbox_record(record_id)
    row.data = {**row.data, **fields}
    row.save()


def compensations(proposal: Proposal) -> list[Execution]:
    return list(proposal.executions.filter(kind=Execution.Kind.COMPENSATE))


# ---- one proposal ------------------------------------------------------------------------------

def test_rolling_back_restores_the_record_and_marks_the_proposal_rolled_back(executed, people):
    proposal = executed("rb-1")
    assert sandbox_record("A-1001").data["refund_amount"] == "120.00"

    result = rollback.rollback_proposal(proposal.pk, people.operator, "refunded the wrong order")

    assert result.outcome == "rolled_back"
    assert sandbox_record("A-1001").data == {"status": "delivered", "refund_amount": "0.00", "total": "300.00"}
    proposal = reload(proposal)
    assert proposal.status == Status.ROLLED_BACK
    assert "refunded the wrong order" in proposal.status_reason
    [undo] = compensations(proposal)
    assert (undo.outcome, undo.before["refund_amount"], undo.after["refund_amount"]) == ("succeeded", "120.00", "0.00")
    newest = proposal.history.first()
    assert newest.history_user == people.operator and "refunded the wrong order" in newest.history_change_reason


def test_rollback_is_refused_when_the_record_changed_since_and_nothing_is_overwritten(executed, people):
    proposal = executed("rb-changed")
    change_record("A-1001", status="returned")
    writes = sandbox_record("A-1001").history.count()

    result = rollback.rollback_proposal(proposal.pk, people.operator, "refunded the wrong order")

    assert (result.outcome, result.fields) == ("refused", ("status",))
    assert sandbox_record("A-1001").data["status"] == "returned" and sandbox_record("A-1001").data["refund_amount"] == "120.00"
    assert sandbox_record("A-1001").history.count() == writes
    proposal = reload(proposal)
    assert proposal.status == Status.EXECUTED
    assert "status" in proposal.status_reason and "nothing was overwritten" in proposal.status_reason
    [refusal] = compensations(proposal)
    assert refusal.outcome == "stale" and refusal.response["manual_fields"] == ["status"]
    assert "'returned'" in refusal.error


def test_a_record_already_back_to_its_before_state_finishes_the_rollback_without_writing(executed, people):
    proposal = executed("rb-restored")
    change_record("A-1001", status="delivered", refund_amount="0.00")
    writes = sandbox_record("A-1001").history.count()

    result = rollback.rollback_proposal(proposal.pk, people.operator, "already undone by support")

    assert result.outcome == "rolled_back"
    assert sandbox_record("A-1001").history.count() == writes
    assert compensations(proposal)[0].response["already_restored"] is True


def test_rolling_back_a_dry_run_writes_nothing_and_says_so(executed, people, sandbox):
    Connector.objects.filter(pk=sandbox.helpdesk.pk).update(dry_run=True)
    proposal = executed("rb-dry", ends=Status.DRY_RUN)
    writes = sandbox_record("A-1001").history.count()

    result = rollback.rollback_proposal(proposal.pk, people.operator, "trial run over")

    assert result.outcome == "nothing_written" and "nothing was written" in result.message
    assert sandbox_record("A-1001").history.count() == writes
    proposal = reload(proposal)
    assert proposal.status == Status.ROLLED_BACK and "nothing was written" in proposal.status_reason
    assert compensations(proposal)[0].outcome == "dry_run"


def test_a_sent_email_cannot_be_rolled_back_and_stays_executed(submit, people):
    proposal = submit("mail", integration="mail-bot-integration", agent="mail-bot", connector="email",
                      action="send_email", target={"type": "customer", "id": "C-1001"},
                      changes={"last_email_subject": "Sorry"}, amount=None, currency=None)
    approve_all(proposal, people)
    execution.run(proposal.pk)

    result = rollback.rollback_proposal(proposal.pk, people.operator, "wrong customer")

    assert result.outcome == "refused" and "cannot be recalled" in result.message
    assert reload(proposal).status == Status.EXECUTED
    assert sandbox_record("C-1001", "customer").data["last_email_subject"] == "Sorry"
    assert compensations(proposal)[0].outcome == "failed"


def test_an_adapter_that_cannot_undo_leaves_the_proposal_executed(executed, people, monkeypatch):
    proposal = executed("rb-permanent")

    def cannot(self, action, target, before):
        raise PermanentError("this system keeps no undo")

    monkeypatch.setattr(SandboxAdapter, "compensate", cannot)

    result = rollback.rollback_proposal(proposal.pk, people.operator, "mistake")

    assert result.outcome == "refused" and "this system keeps no undo" in result.message
    assert reload(proposal).status == Status.EXECUTED
    assert sandbox_record("A-1001").data["refund_amount"] == "120.00"
    assert not reload(proposal).lease_token  # the next attempt is not blocked


def test_only_an_executed_proposal_can_be_rolled_back(executed, people):
    proposal = executed("rb-twice")
    rollback.rollback_proposal(proposal.pk, people.operator, "mistake")

    with pytest.raises(operations.OperationRefused, match="rolled_back"):
        rollback.rollback_proposal(proposal.pk, people.operator, "again")
    assert len(compensations(proposal)) == 1


def test_only_operators_roll_back_and_they_must_say_why(executed, people):
    proposal = executed("rb-who")

    with pytest.raises(PermissionDenied):
        rollback.rollback_proposal(proposal.pk, people.finance1, "mistake")
    with pytest.raises(ValidationError) as error:
        rollback.rollback_proposal(proposal.pk, people.operator, " ")
    assert "reason" in error.value.message_dict
    assert reload(proposal).status == Status.EXECUTED


# ---- ServiceNow: the state the resolve moved is put back too -----------------------------------

SYS_ID = "9d385017c611228701d22104cc95c371"
INCIDENT = {"sys_id": SYS_ID, "number": "INC0000003", "state": "2", "close_code": "", "close_notes": "",
            "short_description": "Wireless access is down"}


def test_a_servicenow_resolve_is_rolled_back_including_the_state_it_moved(submit, people, httpserver, monkeypatch):
    monkeypatch.setenv("HITL_SECRET_SN_USER", "hitl")
    monkeypatch.setenv("HITL_SECRET_SN_PASSWORD", "secret")
    incident = dict(INCIDENT)

    def table_api(request: Request):
        if request.method == "PATCH":
            incident.update(json.loads(request.data))
        return json_response({"result": incident})

    httpserver.expect_request(f"/api/now/table/incident/{SYS_ID}").respond_with_handler(table_api)
    Connector.objects.create(slug="itsm", name="ServiceNow", kind="servicenow",
                             config={"instance_url": httpserver.url_for("/"), "timeout_seconds": 2},
                             credentials={"username": "env:HITL_SECRET_SN_USER", "password": "env:HITL_SECRET_SN_PASSWORD"})
    proposal = submit("inc-3", integration="itsm-bot-integration", agent="itsm-bot", connector="itsm",
                      action="resolve_incident", target={"type": "incident", "id": SYS_ID}, amount=None, currency=None,
                      changes={"close_code": "Solved (Permanently)", "close_notes": "Replaced the access point."})
    approve_all(proposal, people)
    execution.run(proposal.pk)
    assert incident["state"] == "6"
    written = Execution.objects.get(proposal=proposal, kind=Execution.Kind.EXECUTE)
    assert written.before == {"close_code": "", "close_notes": "", "state": "2"}

    result = rollback.rollback_proposal(proposal.pk, people.operator, "resolved the wrong incident")

    assert result.outcome == "rolled_back"
    assert (incident["state"], incident["close_code"], incident["close_notes"]) == ("2", "", "")
    assert reload(proposal).status == Status.ROLLED_BACK


# ---- batches -------------------------------------------------------------------------------------

def test_a_batch_rolls_back_an_agents_proposals_and_lists_the_one_changed_since(
    executed, people, monkeypatch, django_capture_on_commit_callbacks
):
    first, changed, third = (executed(f"batch-{n}", record=f"A-100{n}") for n in (1, 2, 3))
    other_agent = executed("other", record="A-1004", agent="credit-bot")
    change_record("A-1002", status="returned")
    progress = []
    real = rollback.rollback_proposal

    def watching(proposal_id, user, reason):
        progress.append(RollbackBatch.objects.get().done)
        return real(proposal_id, user, reason)

    monkeypatch.setattr(rollback, "rollback_proposal", watching)

    with django_capture_on_commit_callbacks(execute=True):
        batch = rollback.start_batch(people.operator, "refund-bot misread the return policy", agent="refund-bot")

    batch.refresh_from_db()
    assert progress == [0, 1, 2]  # progress is saved after every proposal
    assert (batch.status, batch.total, batch.done, batch.rolled_back, batch.skipped) == ("done", 3, 3, 2, 1)
    assert batch.manual == [{"proposal": str(changed.pk), "fields": ["status"], "error": batch.manual[0]["error"]}]
    assert [reload(p).status for p in (first, changed, third, other_agent)] == [
        Status.ROLLED_BACK, Status.EXECUTED, Status.ROLLED_BACK, Status.EXECUTED]
    assert "refund-bot misread" in reload(first).status_reason


def test_a_batch_by_time_range_leaves_earlier_executions_alone(executed, people, django_capture_on_commit_callbacks):
    old, recent = executed("old", record="A-1001"), executed("recent", record="A-1002")
    Execution.objects.filter(proposal=old).update(finished_at=timezone.now() - timedelta(days=2))

    with django_capture_on_commit_callbacks(execute=True):
        batch = rollback.start_batch(people.operator, "incident window", connector=old.connector,
                                     executed_from=timezone.now() - timedelta(hours=1))

    assert reload(batch).proposal_ids == [str(recent.pk)]
    assert (reload(old).status, reload(recent).status) == (Status.EXECUTED, Status.ROLLED_BACK)


def test_a_batch_needs_a_selection_that_matches(people, sandbox):
    with pytest.raises(ValidationError) as nothing_chosen:
        rollback.start_batch(people.operator, "why")
    with pytest.raises(ValidationError) as nothing_matches:
        rollback.start_batch(people.operator, "why", agent="no-such-bot")

    assert "agent" in nothing_chosen.value.message_dict and "no executed proposal" in str(nothing_matches.value)
    assert RollbackBatch.objects.count() == 0


def test_a_redelivered_batch_task_does_nothing_twice(executed, people, django_capture_on_commit_callbacks):
    executed("once")
    with django_capture_on_commit_callbacks(execute=True):
        batch = rollback.start_batch(people.operator, "mistake", agent="refund-bot")

    assert rollback.run_batch(batch.pk) == "nothing to do"
    assert Execution.objects.filter(kind=Execution.Kind.COMPENSATE).count() == 1


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_a_batch_and_lists_the_proposal_changed_since(api, publish, sandbox, people, start_worker):
    publish(matrix_spec(rule("refunds-run", "auto", actions=["refund"])))
    start_worker()
    ids = []
    for n in (1, 2, 3):
        body = proposal_body(idempotency_key=f"auto-{n}", amount="40.00", confidence=0.97,
                             changes={"status": "refunded", "refund_amount": "40.00"},
                             target={"type": "order", "id": f"A-100{n}"})
        created = api.post("/api/v1/proposals/", data=json.dumps(body), content_type="application/json").json()
        assert created["decision"]["outcome"] == "auto", created["decision"]
        ids.append(created["id"])
    wait_until(lambda: Proposal.objects.filter(pk__in=ids, status=Status.EXECUTED).count() == 3,
               message="the worker to execute three auto-approved refunds")
    change_record("A-1002", status="returned")

    batch = rollback.start_batch(people.operator, "refund-bot incident", agent="refund-bot")

    wait_until(lambda: reload(batch).status == RollbackBatch.Status.DONE, message="the worker to finish the batch")
    assert (batch.total, batch.done, batch.rolled_back, batch.skipped) == (3, 3, 2, 1)
    assert [(item["proposal"], item["fields"]) for item in batch.manual] == [(ids[1], ["status"])]
    assert sandbox_record("A-1001").data["refund_amount"] == "0.00" and sandbox_record("A-1003").data["refund_amount"] == "0.00"
    assert sandbox_record("A-1002").data == {"status": "returned", "refund_amount": "40.00", "total": "300.00"}
