"""Reviewers work their queue in the admin, in a real Chromium."""

from __future__ import annotations

import pytest

from approvals.models import Proposal, Status
from tests.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_reviewer_sees_their_queue_and_approves_from_the_diff(page, post_proposal, demo_matrix, people):
    proposal_id = post_proposal().pk
    group = Proposal.objects.get(pk=proposal_id).review_tasks.get().group.name
    reviewer = people.make("reviewer", group)
    log_in(page, reviewer.username)

    page.goto("/admin/approvals/proposal/")
    row = page.locator("#result_list tbody tr").first
    assert "refund order/A-1001" in row.inner_text()
    row.locator("a").first.click()

    diff = page.locator("#proposal-diff").inner_text()
    assert "refund_amount" in diff and "120.00" in diff and "delivered" in diff
    assert "Why the policy routed it: review" in page.locator("#proposal-decision").inner_text()
    assert "Order A-1001" in page.locator("#proposal-evidence").inner_text()
    page.fill("#id_reason", "photo confirms the damage")
    page.click("#approve-button")

    page.wait_for_selector(".messagelist")
    assert "Recorded: approve" in page.locator(".messagelist").inner_text()
    assert Proposal.objects.get(pk=proposal_id).status in (Status.APPROVED, Status.EXECUTING, Status.EXECUTED)


def test_a_reviewer_of_another_group_sees_no_such_proposal(page, post_proposal, demo_matrix, people):
    proposal_id = post_proposal().pk
    log_in(page, "sales1")

    page.goto("/admin/approvals/proposal/")
    assert "refund order/A-1001" not in page.locator("#content").inner_text()
    page.goto(f"/admin/approvals/proposal/{proposal_id}/change/")
    assert page.locator("#approve-button").count() == 0


def test_rejecting_without_a_reason_is_refused_with_a_message(page, post_proposal, demo_matrix, people):
    proposal_id = post_proposal().pk
    group = Proposal.objects.get(pk=proposal_id).review_tasks.get().group.name
    people.make("rejecter", group)
    log_in(page, "rejecter")

    page.goto(f"/admin/approvals/proposal/{proposal_id}/change/")
    page.click("#reject-button")

    assert "reason" in page.locator(".messagelist").inner_text()
    assert Proposal.objects.get(pk=proposal_id).status == Status.PENDING_REVIEW
