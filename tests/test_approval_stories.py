"""The seeds' stories end to end: submitted through the API, worked in the admin, landing in the right queues.

RevOps inbox (seed 002), logistics exceptions on the order-management sandbox (seed 003), tiered
discounts with the six steps on one proposal's thread (seed 000). All on the demo matrix.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.urls import reverse

from approvals import demo_stories
from approvals.models import OversightTask, Proposal, Status
from tests.conftest import reload, sandbox_record

pytestmark = pytest.mark.usefixtures("story_systems", "demo_matrix")


def story(key: str, agent: str, connector: str, action: str, target: tuple[str, str], changes: dict, **extra) -> dict:
    body = {"idempotency_key": key, "agent": agent, "connector": connector, "action": action,
            "target": {"type": target[0], "id": target[1]}, "changes": changes, "amount": None, "currency": None,
            "confidence": 0.95, "customer_impact": "none", "rationale": f"{action} for {target[1]}"}
    body.update(extra)
    return body


def admin_as(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def oversight(client: Client, proposal: Proposal, op: str, reason: str = "") -> None:
    response = client.post(reverse("admin:approvals_proposal_oversight", args=[proposal.pk]), {"op": op, "reason": reason})
    assert response.status_code == 302
    messages = [m.message for m in response.wsgi_request._messages]
    assert not any(m.startswith("Not done") for m in messages), messages


def decide(client: Client, proposal: Proposal, verdict: str, **fields) -> None:
    response = client.post(reverse("admin:approvals_proposal_decide", args=[proposal.pk]), {"verdict": verdict, **fields})
    assert response.status_code == 302
    messages = [m.message for m in response.wsgi_request._messages]
    assert not any(m.startswith("Not recorded") for m in messages), messages


def queue(client: Client, path: str, **params) -> str:
    response = client.get(path, params)
    assert response.status_code == 200
    return response.content.decode()


def change_url(proposal: Proposal) -> str:
    return reverse("admin:approvals_proposal_change", args=[proposal.pk])


def test_revops_inbox_alerts_follow_ups_and_lead_routing(post_proposal, people, story_systems,
                                                         django_capture_on_commit_callbacks):
    deals = demo_stories.AT_RISK
    alerts = [post_proposal(**story(f"risk-{d}", "revops-bot", "crm", "flag_deal_risk", ("opportunity", d),
                                    {"risk": "high", "risk_reason": "no reply in 30 days"}, confidence=0.92))
              for d in deals[:2]]
    assert [a.status for a in alerts] == [Status.RECOMMENDED, Status.RECOMMENDED], alerts[0].status_reason

    sales = admin_as(people.sales1)
    inbox = queue(sales, reverse("admin:approvals_oversighttask_changelist"), todo="open")
    assert all(str(a.oversight.pk) in inbox for a in alerts)
    oversight(sales, alerts[0], "dismiss", "false positive: champion replied yesterday")
    oversight(sales, alerts[1], "escalate", "budget frozen: needs a manager")
    assert (reload(alerts[0]).status, alerts[0].oversight.__class__.objects.get(pk=alerts[0].oversight.pk).state) == (
        Status.DISMISSED, "dismissed")

    manager = admin_as(story_systems.manager)  # sales-managers: the alerts' escalation group
    assert str(alerts[1].oversight.pk) in queue(manager, reverse("admin:approvals_oversighttask_changelist"), todo="open")
    oversight(manager, alerts[1], "mark_done", "called the customer's CFO")
    assert reload(alerts[1]).status == Status.DONE_ELSEWHERE

    followup = post_proposal(**story("followup-O-101", "revops-bot", "crm", "send_followup", ("opportunity", "O-101"),
                                     {"next_email": "Checking in on the proposal we sent."}, customer_impact="medium"))
    assert followup.status == Status.PENDING_REVIEW
    assert change_url(followup) in queue(sales, reverse("admin:approvals_proposal_changelist"), queue="mine")
    decide(sales, followup, "edit", changes=json.dumps({"next_email": "Hope the quarter is going well: shall we talk Thursday?"}))
    with django_capture_on_commit_callbacks(execute=True):
        decide(admin_as(story_systems.sales2), followup, "approve")
    assert reload(followup).status == Status.EXECUTED
    assert sandbox_record("O-101", type="opportunity").data["next_email"].startswith("Hope the quarter")

    obvious = [post_proposal(**story(f"route-{lead}", "revops-bot", "crm", "assign_lead", ("lead", lead),
                                     {"assigned_to": "sue"})) for lead in demo_stories.LEADS[:2]]
    edge = post_proposal(**story("route-edge", "revops-bot", "crm", "assign_lead", ("lead", demo_stories.LEADS[2]),
                                 {"assigned_to": "sue"}, confidence=0.8))
    with django_capture_on_commit_callbacks(execute=True):
        sales.post(reverse("admin:approvals_proposal_changelist") + "?queue=mine",
                   {"action": "approve_selected", "_selected_action": [str(p.pk) for p in [*obvious, edge]]})
    assert [reload(p).status for p in obvious] == [Status.EXECUTED, Status.EXECUTED]
    assert reload(edge).status == Status.PENDING_REVIEW  # its tier allows no bulk approval: one by one


def test_logistics_routine_runs_and_exceptions_reach_their_queues(post_proposal, people, story_systems):
    routine = post_proposal(**story("status-S-2", "dispatch-bot", "orders", "update_shipment_status", ("shipment", "S-2"),
                                    {"status": "arrived_at_hub"}, observed={"status": "in_transit"}))
    assert (routine.outcome, routine.status) == ("on_the_loop", Status.EXECUTED)  # a new agent: run, then watched
    dispatch = admin_as(story_systems.dispatcher)
    assert str(routine.oversight.pk) in queue(dispatch, reverse("admin:approvals_oversighttask_changelist"), todo="open")
    oversight(dispatch, routine, "roll_back", "the scan was from another pallet")
    assert reload(routine).status == Status.ROLLED_BACK
    assert sandbox_record("S-2", type="shipment").data["status"] == "in_transit"

    cases = {
        "failed": story("failed-S-7", "dispatch-bot", "orders", "report_failed_delivery", ("shipment", "S-7"),
                        {"status": "delivery_failed"}, customer_impact="medium"),
        "small-damage": story("damage-S-9", "dispatch-bot", "orders", "report_damage", ("shipment", "S-9"),
                              {"claim_amount": "180.00"}, amount="180.00", currency="USD"),
        "large-damage": story("damage-S-11", "dispatch-bot", "orders", "report_damage", ("shipment", "S-11"),
                              {"claim_amount": "1400.00"}, amount="1400.00", currency="USD"),
        "destination": story("destination-S-8", "dispatch-bot", "orders", "correct_destination", ("shipment", "S-8"),
                             {"destination": "Bremen"}, customer_impact="high"),
        "dispute": story("dispute-S-12", "dispatch-bot", "orders", "open_payment_dispute", ("shipment", "S-12"),
                         {"disputed_amount": "95.00"}, amount="95.00", currency="USD"),
    }
    made = {name: post_proposal(**body) for name, body in cases.items()}
    tiers = {name: [t.group.name for t in p.review_tasks.order_by("position")] for name, p in made.items()}
    assert tiers == {"failed": ["dispatch"], "small-damage": ["support"], "large-damage": ["finance"],
                     "destination": ["dispatch", "management"], "dispute": ["finance"]}
    mine = queue(dispatch, reverse("admin:approvals_proposal_changelist"), queue="mine")
    assert change_url(made["failed"]) in mine and change_url(made["destination"]) in mine
    assert change_url(made["large-damage"]) not in mine
    assert change_url(made["large-damage"]) in queue(admin_as(people.finance1), reverse("admin:approvals_proposal_changelist"),
                                                     queue="mine")

    again = post_proposal(**story("status-S-7-again", "dispatch-bot", "orders", "update_shipment_status", ("shipment", "S-7"),
                                  {"status": "returning"}))
    assert (again.status, again.decision["rules"]) == (Status.TRIAGE, ["risk-conflicting-record"])


def test_tiered_discount_runs_after_sales_manager_then_finance_with_six_steps_on_its_thread(
        post_proposal, people, story_systems, django_capture_on_commit_callbacks):
    discount = post_proposal(**story("discount-O-110", "deal-desk-bot", "crm", "apply_discount", ("opportunity", "O-110"),
                                     {"discount_amount": "2500.00"}, amount="2500.00", currency="USD",
                                     observed={"discount_amount": None},
                                     evidence=[{"title": "pricing history", "kind": "analysis"}]))
    assert [t.group.name for t in discount.review_tasks.order_by("position")] == ["sales-managers", "finance"]
    finance = admin_as(people.finance1)
    assert change_url(discount) in queue(admin_as(story_systems.sales_manager), reverse("admin:approvals_proposal_changelist"),
                                         queue="mine")
    decide(admin_as(story_systems.sales_manager), discount, "approve")
    assert [t.state for t in discount.review_tasks.order_by("position")] == ["satisfied", "active"]
    assert change_url(discount) in queue(finance, reverse("admin:approvals_proposal_changelist"), queue="mine")
    with django_capture_on_commit_callbacks(execute=True):
        decide(finance, discount, "approve")
    assert reload(discount).status == Status.EXECUTED
    assert sandbox_record("O-110", type="opportunity").data["discount_amount"] == "2500.00"

    page = queue(admin_as(people.operator), change_url(discount))
    steps = page[page.index('id="proposal-six-steps"'):page.index('id="proposal-thread"')]
    for name in ("Contextual data analysis", "AI recommendation", "Policy-based validation",
                 "Human review and approval", "Controlled execution", "Centralised audit logging"):
        assert name in steps
    assert steps.count("<td>done</td>") == 6
    assert "sales-managers satisfied -&gt; finance satisfied" in steps
