"""A record that changed after its preview: nothing is written, and review reopens with the new diff."""

from __future__ import annotations

from decimal import Decimal

import pytest

from approvals import execution, services
from approvals.models import Proposal, Status
from connectors.models import SandboxRecord
from tests.conftest import proposal_body, reload


@pytest.fixture
def approved(demo_matrix, make_client, people):
    integration = make_client("refund-bot-integration").integration

    def _approved(key: str = "stale") -> Proposal:
        data = proposal_body(idempotency_key=key)
        data["amount"] = Decimal(data["amount"])
        proposal, _ = services.submit_proposal(integration, data)
        approve(proposal, people)
        assert reload(proposal).status == Status.APPROVED
        return reload(proposal)

    return _approved


def approve(proposal: Proposal, people) -> None:
    while reload(proposal).status == Status.PENDING_REVIEW:
        task = services.active_task(proposal)
        reviewer = people.make(f"reviewer-{task.pk}-{proposal.reviews.count()}", task.group.name)
        services.record_verdict(proposal.pk, reviewer, "approve")


def order() -> SandboxRecord:
    return SandboxRecord.objects.get(type="order", record_id="A-1001")


def customer_returns_the_order() -> None:
    row = order()
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
    assert order().data["refund_amount"] == "0.00"


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

    approve(proposal, people)
    execution.run(proposal.pk)

    assert reload(proposal).status == Status.EXECUTED
    assert order().data == {"status": "refunded", "refund_amount": "120.00", "total": "300.00"}


def test_a_record_that_cannot_be_reread_stays_stale_for_an_operator(approved):
    proposal = approved()
    customer_returns_the_order()
    execution.run(proposal.pk)
    order().delete()

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
