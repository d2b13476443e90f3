"""Executing approved proposals: what was approved is what is written, once, and only if still safe."""

from __future__ import annotations

import pytest
from django_fsm import TransitionNotAllowed

from approvals import execution, services
from approvals.models import Proposal, Status
from connectors.adapters.base import TransientError
from connectors.adapters.sandbox import SandboxAdapter
from connectors.models import Execution
from policies.services import engage_switch
from tests.conftest import reload, sandbox_record


def test_an_approved_refund_is_written_to_the_sandbox(approved):
    proposal = approved()

    assert execution.run(proposal.pk).status == Status.EXECUTED

    assert sandbox_record("A-1001").data["refund_amount"] == "120.00"
    done = Execution.objects.get(proposal=proposal)
    assert (done.outcome, done.before["refund_amount"], done.after["refund_amount"]) == ("succeeded", "0.00", "120.00")


def test_running_twice_writes_once(approved):
    proposal = approved()
    execution.run(proposal.pk)
    writes = sandbox_record("A-1001").history.count()

    assert execution.run(proposal.pk).status.startswith("nothing to do")
    assert sandbox_record("A-1001").history.count() == writes


def test_a_change_that_differs_from_the_approved_one_is_refused(approved):
    proposal = approved()
    Proposal.objects.filter(pk=proposal.pk).update(changes={"status": "refunded", "refund_amount": "9999.00"})

    execution.run(proposal.pk)

    proposal = reload(proposal)
    assert proposal.status == Status.FAILED
    assert "differs from the change that was approved" in proposal.status_reason
    assert sandbox_record("A-1001").data["refund_amount"] == "0.00"


def test_a_record_changed_since_the_preview_goes_stale_and_is_not_written(approved):
    proposal = approved()
    record = sandbox_record("A-1001")
    record.data = {**record.data, "status": "returned"}
    record.save()

    execution.run(proposal.pk)

    proposal = reload(proposal)
    assert proposal.status == Status.STALE
    assert "status" in proposal.status_reason
    assert sandbox_record("A-1001").data["refund_amount"] == "0.00"


def test_a_stale_proposal_goes_back_to_review_with_a_fresh_diff(approved, django_capture_on_commit_callbacks):
    """No operator needed: once the stale state commits, the proposal is re-previewed and reopened."""
    proposal = approved()
    record = sandbox_record("A-1001")
    record.data = {**record.data, "status": "returned"}
    record.save()

    with django_capture_on_commit_callbacks(execute=True):
        execution.run(proposal.pk)

    proposal = reload(proposal)
    assert proposal.status == Status.PENDING_REVIEW
    assert {"field": "status", "before": "returned", "after": "refunded", "sensitive": False} in proposal.preview["changes"]


def test_dry_run_connectors_record_what_would_be_written_but_write_nothing(approved, sandbox):
    sandbox.helpdesk.dry_run = True
    sandbox.helpdesk.save()
    proposal = approved()

    execution.run(proposal.pk)

    assert reload(proposal).status == Status.DRY_RUN
    assert "dry run" in reload(proposal).status_reason
    assert sandbox_record("A-1001").data["refund_amount"] == "0.00"
    dry = Execution.objects.get(proposal=proposal)
    assert dry.outcome == "dry_run" and dry.after["refund_amount"] == "120.00"


def test_a_block_switch_stops_approved_work_that_has_not_started(approved):
    proposal = approved()
    engage_switch(scope="connector", value="helpdesk", mode="block", reason="refund incident INC-7")

    execution.run(proposal.pk)

    proposal = reload(proposal)
    assert proposal.status == Status.FAILED
    assert "INC-7" in proposal.status_reason
    assert sandbox_record("A-1001").data["refund_amount"] == "0.00"


def test_transient_errors_are_retried_then_fail_visibly(approved, monkeypatch, settings):
    settings.EXECUTION_MAX_ATTEMPTS = 2
    proposal = approved()

    def unavailable(self, *args, **kwargs):
        raise TransientError("503 from the helpdesk", status=503, retry_after=7)

    monkeypatch.setattr(SandboxAdapter, "execute", unavailable)

    first = execution.run(proposal.pk, attempt=1)
    assert first.retry_in == 7
    assert reload(proposal).status == Status.EXECUTING
    Proposal.objects.filter(pk=proposal.pk).update(lease_until=None)
    second = execution.run(proposal.pk, attempt=2)

    assert second.retry_in is None
    proposal = reload(proposal)
    assert proposal.status == Status.FAILED
    assert "503" in proposal.status_reason
    assert Execution.objects.filter(proposal=proposal, outcome="failed").count() == 2


def test_a_failed_execution_can_be_retried_by_an_operator(approved, monkeypatch, people, django_capture_on_commit_callbacks):
    proposal = approved()

    def broken(self, *args, **kwargs):
        raise RuntimeError("adapter bug")

    monkeypatch.setattr(SandboxAdapter, "execute", broken)
    execution.run(proposal.pk)
    assert reload(proposal).status == Status.FAILED
    assert "adapter bug" in reload(proposal).status_reason
    monkeypatch.undo()

    with django_capture_on_commit_callbacks(execute=True):
        services.retry_execution(proposal.pk, people.operator, "adapter fixed")

    assert reload(proposal).status == Status.EXECUTED
    assert sandbox_record("A-1001").data["refund_amount"] == "120.00"


def test_status_changes_only_through_transitions(approved):
    proposal = approved()
    with pytest.raises(TransitionNotAllowed):
        proposal.reject()
    with pytest.raises(TransitionNotAllowed):
        proposal.finish_execution()
