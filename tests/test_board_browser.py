"""The board room in a real Chromium: a board member and a superuser walk the dashboard, approve-as-rule,
the matrix editor, the kill switch page and canaries, including what they are refused. Screenshots of
the dashboard, the matrix editor and the kill switch page go to var/screenshots/."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from approvals import board
from approvals.models import CanaryPlant, Proposal, Status
from bench.records import insert_proposals
from connectors.models import Connector
from policies.models import ApprovalMatrix, KillSwitch, MatrixStatus
from tests.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def screenshot(page, name: str) -> None:
    folder = settings.VAR_DIR / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.fixture
def record(people, demo_matrix, make_client):
    """A month of decided work (2,000 proposals, a tenth open) and one agent clean enough for a rule."""
    insert_proposals(2_000, integration_id=make_client("bench-agents").integration.pk,
                     connectors={c.slug: c.pk for c in Connector.objects.all()},
                     review_group_id=Group.objects.get_or_create(name="sales")[0].pk,
                     reviewer_ids=[people.sales1.pk, people.support1.pk, people.finance1.pk])


def test_a_board_member_reads_the_dashboard_and_drafts_a_suggested_rule(page, people, record):
    suggestion = next(s for s in board.rule_suggestions() if s.agent == "crm-assistant")
    log_in(page, "board1")

    page.goto("/admin/")
    dashboard = page.locator("#board-dashboard")
    assert "waiting for reviewers" in dashboard.locator("#pending").inner_text()
    assert "overdue" in dashboard.locator("#queues").inner_text()
    assert page.locator("#outcomes svg.board-chart").count() >= 5  # the share bar, four outcomes, failed executions
    assert "median time to a verdict" in dashboard.locator("#outcomes").inner_text()
    assert "crm-assistant" in dashboard.locator("#agent-rates").inner_text()
    assert "sales1" in dashboard.locator("#reviewer-records").inner_text()
    screenshot(page, "dashboard")

    row = page.locator("#rule-suggestions tr", has_text=suggestion.sentence)
    row.locator("input[type=submit]").click()

    page.wait_for_selector(".messagelist")
    draft = ApprovalMatrix.objects.get(status=MatrixStatus.DRAFT)
    assert f"Draft v{draft.version}" in page.locator(".messagelist").inner_text()
    rules = page.locator("#rules-group").inner_text()
    assert f"update_account by crm-assistant on crm with confidence >= {suggestion.confidence_min:g} -> runs automatically" in rules
    screenshot(page, "matrix-editor")


def test_a_board_member_edits_a_rule_by_ticking_and_a_published_version_stays_frozen(page, people, demo_matrix):
    draft = ApprovalMatrix.objects.get(pk=demo_matrix.pk)
    log_in(page, "board1")
    page.goto(f"/admin/policies/approvalmatrix/{draft.pk}/change/")
    assert page.locator("input[name=_save]").count() == 0  # published: read-only
    assert "credit, discount or refund of 1,000 USD or more -> finance, 2 approvals, due in 4 h" in page.locator("#rules-group").inner_text()
    assert "refund-whose-change-moves-more-than" in page.locator("#test-cases").inner_text()

    page.goto("/admin/policies/approvalmatrix/")
    page.locator(f"#result_list input[value='{draft.pk}']").check()
    page.select_option("select[name=action]", "new_draft")
    page.click("button[name=index]")
    page.wait_for_selector(".messagelist")
    copy = ApprovalMatrix.objects.get(status=MatrixStatus.DRAFT)
    rule = copy.rules.get(name="support-outgoing-email")
    page.goto(f"/admin/policies/rule/{rule.pk}/change/")
    assert page.locator("select[name=touches_sensitive] option:checked").inner_text() == "any"
    page.check("input[name=actions][value=close_ticket]")
    page.click("input[name=_save]")

    page.wait_for_selector(".messagelist")
    rule.refresh_from_db()
    assert rule.actions == "close_ticket,public_reply,send_email"
    page.goto(f"/admin/policies/approvalmatrix/{copy.pk}/change/")
    assert "close_ticket, public_reply or send_email -> support" in page.locator("#rules-group").inner_text()


def test_a_board_member_stops_all_automation_and_a_reviewer_cannot(page, people, demo_matrix):
    log_in(page, "board1")
    page.goto("/admin/policies/killswitch/")
    assert "No kill switch is engaged" in page.locator("#engaged-switches").inner_text()

    page.fill("#stop-all-reason", "INC-31: an agent is refunding twice")
    page.click("#stop-all input[type=submit]")

    page.wait_for_selector(".messagelist")
    engaged = page.locator("#engaged-switches").inner_text()
    assert "everything" in engaged and "forces review" in engaged and "INC-31" in engaged and "board1" in engaged
    assert KillSwitch.objects.get(engaged=True).mode == "force_review"
    screenshot(page, "kill-switches")

    page.context.clear_cookies()
    log_in(page, "finance1")
    response = page.goto("/admin/policies/killswitch/")
    assert response.status == 403
    assert page.request.post("/admin/policies/killswitch/global/block-all/", form={"reason": "x"}).status == 403
    assert not KillSwitch.objects.filter(mode="block").exists()


def test_a_superuser_plants_a_canary_reviewers_cannot_tell_and_it_is_never_executed(page, people, demo_matrix, make_client):
    get_user_model().objects.create_superuser("root", password="pw")
    make_client("refund-bot-integration")
    log_in(page, "root")

    page.goto("/admin/")
    assert page.locator("#board-dashboard").count() == 1
    assert page.locator("#rule-suggestions input[type=submit]").count() == 0  # only board members draft rules
    page.click("text=Plant a canary proposal")
    page.select_option("#id_integration", label="refund-bot-integration")
    page.fill("#id_agent", "refund-bot")
    page.select_option("#id_connector", label=str(Connector.objects.get(slug="helpdesk")))
    page.fill("#id_action", "refund")
    page.fill("#id_target_type", "order")
    page.fill("#id_target_id", "A-1004")
    page.fill("#id_changes", '{"status": "refunded", "refund_amount": "2900.00"}')
    page.fill("#id_amount", "2900.00")
    page.fill("#id_currency", "USD")
    page.fill("#id_confidence", "0.92")
    page.fill("#id_rationale", "Customer reports the parcel arrived damaged.")
    page.fill("#id_note", "ten times the order total")
    page.click("input[type=submit]")

    page.wait_for_selector(".messagelist")
    assert "Canary planted" in page.locator(".messagelist").inner_text()
    canary = Proposal.objects.get(canary=True)
    assert CanaryPlant.objects.get(proposal=canary).planted_by.username == "root"

    page.context.clear_cookies()
    log_in(page, "finance1")
    page.goto(f"/admin/approvals/proposal/{canary.pk}/change/")
    assert "canary" not in page.locator("#content").inner_text().lower()
    assert page.goto("/admin/board/canary/").status == 403
    page.goto(f"/admin/approvals/proposal/{canary.pk}/history/")
    assert "canary" not in page.locator("#content").inner_text().lower()
    assert Proposal.objects.get(pk=canary.pk).status == Status.PENDING_REVIEW
