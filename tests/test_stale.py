"""A record that changed after its preview: nothing is written, and review reopens with the new diff."""

from __future__ import annotations

from approvals import execution, services
from approvals.models import Proposal, Status
from tests.conftest import approve_all, reload, sandbox_record


def customer_returns_the_order() -> None:
    row = sandbox_record("A-1001")
    row.data = {**row.data, "status": "returned"}
    row.save()


def test_a_stale_proposal_goes_back_to_review_by_itself_with_the_new_diff(approved, django_capture_on_commit_callbacks):
    proposal = approved()
    customer_returns_the_order()

    with django_capture_on_commit_callbacks(execute=True):
        execution.run(proposal.pk)

    proposal = reload(proposal)
    assert proposal.status == Status.PENDING_REVIEW
    assert {"field": "status", "before": "returned", "after": "refunded", "sensitive": False} in proposal.preview["changes"]
    assert proposal.preview_before["status"] == "returned"
    assert services.active_task(proposal) is not None
    assert sandbox_record("A-1001").data["refund_amount"] == "0.00"


def test_history_shows_stale_then_back_to_review_with_the_reason(approved, django_capture_on_commit_callbacks):
    proposal = approved()
    customer_returns_the_order()

    with django_capture_on_commit_callbacks(execute=True):
        execution.run(proposal.pk)

    rows = list(proposal.history.order_by("history_date", "history_id"))
    assert [row.status for row in rows[-2:]] == [Status.STALE, Status.PENDING_REVIEW]
    assert "status" in rows[-2].history_change_reason
    assert "back to review" in rows[-1].history_change_reason and "changed after the preview" in rows[-1].history_change_reason


def test_reviewers_approve_the_new_diff_and_it_executes(approved, people, django_capture_on_commit_callbacks):
    proposal = approved()
    customer_returns_the_order()
    with django_capture_on_commit_callbacks(execute=True):
        execution.run(proposal.pk)

    approve_all(proposal, people)
    execution.run(proposal.pk)

    assert reload(proposal).status == Status.EXECUTED
    assert sandbox_record("A-1001").data == {"status": "refunded", "refund_amount": "120.00", "total": "300.00"}


def test_a_record_that_cannot_be_reread_stays_stale_for_an_operator(approved):
    proposal = approved()
    customer_returns_the_order()
    execution.run(proposal.pk)
    sandbox_record("A-1001").delete()

    execution.reopen_stale(proposal.pk)

    proposal = reload(proposal)
    assert proposal.status == Status.STALE
    assert "could not re-preview" in proposal.status_reason and "RecordNotFound" in proposal.status_reason


def test_a_stale_proposal_an_operator_took_over_is_left_to_them(approved, people):
    proposal = approved()
    customer_returns_the_order()
    execution.run(proposal.pk)
    Proposal.objects.filter(pk=proposal.pk).update(claimed_by=people.operator)  # as approvals.operations.take_over does

    assert execution.reopen_stale(proposal.pk).startswith("nothing to do")
    assert reload(proposal).status == Status.STALE


def test_a_redelivered_reopen_does_nothing_twice(approved, django_capture_on_commit_callbacks):
    proposal = approved()
    customer_returns_the_order()
    with django_capture_on_commit_callbacks(execute=True):
        execution.run(proposal.pk)
    tiers = reload(proposal).review_tasks.count()

    assert execution.reopen_stale(proposal.pk).startswith("nothing to do")
    assert reload(proposal).review_tasks.count() == tiers
