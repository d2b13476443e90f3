"""The inbox and the decision page in a real Chromium, as a reviewer, an operator and a superuser.

Each flow saves a screenshot under var/screenshots/ (docs/screenshots/ keeps the current ones).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from approvals.masking import MASK
from approvals.models import Proposal, ReviewTask, Status
from tests.conftest import log_in, reload

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
TICKET = dict(connector="helpdesk", action="set_status", target={"type": "ticket", "id": "T-1001"}, amount=None,
              currency=None, confidence=0.8, customer_impact="medium", changes={"status": "closed", "owner": "bob"})


def screenshot(page, name: str) -> None:
    folder = settings.VAR_DIR / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def overdue(proposal, minutes: int = 45) -> None:
    """Arrange: the proposal's active tier fell due `minutes` ago."""
    due = timezone.now() - timedelta(minutes=minutes)
    ReviewTask.objects.filter(proposal=proposal, state=ReviewTask.State.ACTIVE).update(due_at=due)
    Proposal.objects.filter(pk=proposal.pk).update(due_at=due)


def test_a_reviewer_works_their_inbox_with_the_keyboard_approving_and_moving_on(page, submit, people):
    late = submit("late", target={"type": "order", "id": "A-1001"})
    big = submit("big", amount="1500.00", changes={"status": "refunded", "refund_amount": "1500.00"},
                 target={"type": "order", "id": "A-1002"})
    submit("support's", **TICKET)
    overdue(late, minutes=180)  # hours: a slow machine's minutes do not change what the page says
    log_in(page, "finance1")

    page.goto("/admin/approvals/proposal/")
    assert page.url.endswith("?queue=mine")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    first = rows.nth(0).inner_text()
    assert "A-1001" in first and "overdue by 3 h" in first and "⚠" in first
    assert "refund order/A-1002: status → refunded, refund_amount → 1500.00" in rows.nth(1).inner_text()
    assert "My work 2" in " ".join(page.locator("#queue-tabs").inner_text().split())
    screenshot(page, "inbox")

    rows.nth(0).locator("a").first.click()
    bar = page.locator("#decision-bar")
    assert "overdue by 3 h" in bar.inner_text()
    assert "last 0 reviewed refund proposals" in page.locator("#agent-record").inner_text()
    screenshot(page, "decision-page")
    page.keyboard.press("Shift+A")  # approve and next

    page.wait_for_url(f"**/{big.pk}/change/")
    assert reload(late).status == Status.EXECUTED  # eager: the approval's execution ran on commit
    assert "Recorded: approve" in page.locator(".messagelist").inner_text()
    page.keyboard.press("r")  # no reason yet: the reason box, not a rejection
    assert page.evaluate("document.activeElement.id") == "id_reason"
    assert reload(big).status == Status.PENDING_REVIEW


def test_a_reviewer_without_the_permission_sees_sensitive_values_masked(page, submit, people):
    proposal = submit("ticket", **TICKET)
    log_in(page, "support1")

    page.goto("/admin/approvals/proposal/")
    row = page.locator("#result_list tbody tr").first.inner_text()
    assert f"owner → {MASK}" in row and "bob" not in row
    page.locator("#result_list tbody tr a").first.click()
    assert "bob" not in page.locator("#content").inner_text()
    assert "owner" in page.locator("#masked-note").inner_text()
    assert page.locator("#edit-button").count() == 0
    screenshot(page, "decision-page-masked")

    history = proposal.history.order_by("history_id").first()
    page.goto(f"/admin/approvals/proposal/{proposal.pk}/history/{history.history_id}/")
    assert "bob" not in page.locator("#content").inner_text()


def test_a_reviewer_sees_who_holds_a_proposal_and_cannot_decide_another_groups(page, submit, people):
    proposal = submit("held")
    theirs = submit("support's", **TICKET)
    log_in(page, "finance2")
    page.goto(f"/admin/approvals/proposal/{proposal.pk}/change/")  # finance2 now holds it
    page.context.clear_cookies()

    log_in(page, "finance1")
    page.goto("/admin/approvals/proposal/?queue=mine")
    assert "finance2 (for 5 min)" in page.locator("#result_list tbody tr").first.inner_text()
    page.goto(f"/admin/approvals/proposal/{proposal.pk}/change/")
    assert "finance2 is working on this proposal" in page.locator("#held-by-other").inner_text()

    page.goto(f"/admin/approvals/proposal/{theirs.pk}/change/")  # another group's: not even visible
    assert page.locator("#decision-bar").count() == 0 and page.locator("#approve-button").count() == 0


def test_an_operator_lands_on_held_work_and_releases_it_from_the_top(page, submit, people):
    held = submit("held", confidence=0.5)  # failed work shares the queue: tests/test_inbox.py
    submit("waiting", target={"type": "order", "id": "A-1002"})
    log_in(page, "operator")

    page.goto("/admin/approvals/proposal/")
    assert page.url.endswith("?queue=attention")
    listed = page.locator("#result_list").inner_text()
    assert "A-1001" in listed and "Triage" in listed and "A-1002" not in listed
    screenshot(page, "inbox-operator")

    page.goto(f"/admin/approvals/proposal/{held.pk}/change/")
    page.fill("#id_reason", "checked with the customer")
    page.click("#release-button")
    page.wait_for_selector(".messagelist")
    assert reload(held).status == Status.PENDING_REVIEW


def test_a_superuser_lands_on_everything_open_before_anything_finished(page, submit, people):
    submit("waiting")
    submit("held", confidence=0.5, target={"type": "order", "id": "A-1002"})
    get_user_model().objects.create_superuser("root", password="pw")
    log_in(page, "root")

    page.goto("/admin/approvals/proposal/")
    assert page.url.endswith("?queue=open")
    assert page.locator("#result_list tbody tr").count() == 2
    tabs = page.locator("#queue-tabs").inner_text()
    assert "Everything open" in tabs and "Triage, stale and failed" in tabs
    screenshot(page, "inbox-superuser")
