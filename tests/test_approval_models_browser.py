"""The oversight buttons in a real Chromium: an alert dismissed from the inbox, on-the-loop work rolled back."""

from __future__ import annotations

import pytest

from approvals.models import OversightTask, Status
from tests.conftest import log_in, sandbox_record

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_sales_dismisses_a_deal_risk_alert_from_its_inbox(page, post_proposal, demo_matrix, story_systems, people):
    alert = post_proposal(idempotency_key="risk-O-104", agent="revops-bot", connector="crm", action="flag_deal_risk",
                          target={"type": "opportunity", "id": "O-104"}, changes={"risk": "high"}, amount=None,
                          currency=None, customer_impact="none", confidence=0.92, rationale="No reply in 30 days.")
    log_in(page, people.sales1.username)
    page.goto("/admin/approvals/oversighttask/?todo=open")
    page.locator("#result_list tbody tr").first.locator("td a").first.click()
    page.wait_for_selector("#proposal-oversight")
    assert page.locator("#oversight-state").inner_text() == "open"
    assert page.locator("#loop-rollback-button").count() == 0
    page.goto(f"/admin/approvals/proposal/{alert.pk}/change/")
    assert "assisted" in page.locator("#proposal-decision").inner_text()
    page.fill("#id_oversight_reason", "false positive: the champion replied yesterday")
    page.click("#dismiss-button")
    page.wait_for_selector(".messagelist")
    assert "Dismissed." in page.locator(".messagelist").inner_text()
    alert.refresh_from_db()
    assert alert.status == Status.DISMISSED
    assert OversightTask.objects.get(proposal=alert).decided_by == people.sales1


def test_dispatch_rolls_back_a_new_agents_status_update_in_one_click(page, post_proposal, demo_matrix, story_systems):
    update = post_proposal(idempotency_key="status-S-3", agent="dispatch-bot", connector="orders",
                           action="update_shipment_status", target={"type": "shipment", "id": "S-3"},
                           changes={"status": "arrived_at_hub"}, amount=None, currency=None, customer_impact="none",
                           confidence=0.95, rationale="Carrier scan at the hub.")
    assert update.status == Status.EXECUTED
    log_in(page, story_systems.dispatcher.username)
    page.goto(f"/admin/approvals/proposal/{update.pk}/change/")
    assert "runs at once" in page.locator("#proposal-decision").inner_text()
    page.fill("#id_oversight_reason", "scan belonged to another pallet")
    page.click("#loop-rollback-button")
    page.wait_for_selector(".messagelist")
    assert "Rolled back." in page.locator(".messagelist").inner_text()
    assert sandbox_record("S-3", type="shipment").data["status"] == "in_transit"
