"""The seeds' own stories in the demo: the RevOps inbox (seed 002), logistics exceptions against a
sandbox order-management system (seed 003's mini-case) and Salesforce-style tiered discounts (seed 000).

`seed_stories` adds their people, systems and first proposals (idempotent, like the rest of the
demo); `trickle` is what beat calls in `make run` so simulated agents keep producing work.
"""

from __future__ import annotations

import random
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import Group
from django.utils import timezone

from approvals.models import Integration, Proposal
from approvals.services import submit_proposal
from connectors.models import Connector, SandboxRecord

STORY_GROUPS = ("dispatch", "management", "sales-managers")
STORY_USERS = {"dispatcher-dan": ("dispatch",), "manager-mia": ("management", "sales-managers"),
               "sales-manager-max": ("sales-managers",)}
CRM_STORY_ACTIONS = ["send_followup", "flag_deal_risk", "assign_lead", "apply_discount"]
ORDER_ACTIONS = ["update_shipment_status", "match_document", "notify_customer", "report_failed_delivery",
                 "request_missing_documents", "correct_destination", "report_damage", "delay_transfer",
                 "open_payment_dispute"]
STALLED = ("O-101", "O-102", "O-103")  # the stories' own deals: the demo's CRM agent works O-1 to O-12
AT_RISK = ("O-104", "O-105", "O-106", "O-107", "O-108")
DISCOUNTED = ("O-109", "O-110")
LEADS = tuple(f"L-{n}" for n in range(1, 7))
SHIPMENTS = tuple(f"S-{n}" for n in range(1, 13))


def seed_story_systems() -> None:
    """The CRM learns the story actions; an order-management sandbox holds shipments and documents."""
    crm = Connector.objects.get(slug="crm")
    actions = list(crm.config.get("actions") or [])
    if not set(CRM_STORY_ACTIONS) <= set(actions):
        crm.config = {**crm.config, "actions": sorted({*actions, *CRM_STORY_ACTIONS})}
        crm._change_reason = "demo: the RevOps inbox and tiered discounts"
        crm.save()
    orders, _ = Connector.objects.get_or_create(
        slug="orders", defaults={"name": "Sandbox order management", "kind": "sandbox_orders", "config": {"actions": ORDER_ACTIONS}},
    )
    for n, deal in enumerate((*STALLED, *AT_RISK, *DISCOUNTED), start=1):
        _record(crm, "opportunity", deal, {"name": f"Story deal {n}", "stage": "Negotiation", "amount": str(5000 * n),
                                           "owner": "sue", "discount_amount": None})
    for n, lead in enumerate(LEADS, start=1):
        _record(crm, "lead", lead, {"company": f"Lead company {n}", "territory": ["EMEA", "NA", "APAC"][n % 3], "assigned_to": ""})
    cities = ["Rotterdam", "Hamburg", "Antwerp", "Gdansk"]
    for n, shipment in enumerate(SHIPMENTS, start=1):
        _record(orders, "shipment", shipment, {"status": "in_transit", "destination": cities[n % 4], "carrier": "NorthSea Freight",
                                               "consignee": f"Customer {n}", "documents": "incomplete" if n % 5 == 0 else "complete"})
        _record(orders, "document", f"D-{n}", {"kind": "bill_of_lading", "shipment": shipment, "matched": False})


def _record(connector: Connector, type_: str, record_id: str, data: dict) -> None:
    SandboxRecord.objects.get_or_create(connector=connector, type=type_, record_id=record_id, defaults={"data": data})


def groups() -> list[Group]:
    return [Group.objects.get_or_create(name=name)[0] for name in STORY_GROUPS]


# ---- the stories' proposals -----------------------------------------------------------------

def _proposal(key: str, agent: str, connector: str, action: str, target: tuple[str, str], changes: dict,
              rationale: str, *, confidence: float = 0.95, impact: str = "none", amount: str | None = None,
              evidence: str = "", observed: dict | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "idempotency_key": key, "agent": agent, "connector": connector, "action": action,
        "target": {"type": target[0], "id": target[1]}, "changes": changes, "confidence": confidence,
        "customer_impact": impact, "rationale": rationale, "context": {"demo": True, "story": key.split("-")[0]},
        "evidence": [{"title": evidence or rationale[:60], "kind": "analysis"}],
    }
    if amount is not None:
        data.update(amount=Decimal(amount), currency="USD")
    if observed is not None:
        data["observed"] = observed
    return data


def revops_inbox() -> list[dict[str, Any]]:
    """Seed 002: follow-ups for stalled deals, deal risk alerts, lead routing recommendations."""
    cases = [
        _proposal(f"revops-followup-{deal}", "revops-bot", "crm", "send_followup", ("opportunity", deal),
                  {"next_email": f"Hi, picking up where we left off on {deal}: does Thursday work for a call?"},
                  f"{deal} has had no activity for 45 days; a short re-engagement note.", impact="medium",
                  evidence="No activity in 45 days")
        for deal in STALLED
    ]
    reasons = ["champion left the company", "no reply in 30 days", "budget frozen", "competitor in the last call",
               "renewal date moved twice"]
    cases += [
        _proposal(f"revops-risk-{deal}", "revops-bot", "crm", "flag_deal_risk", ("opportunity", deal),
                  {"risk": "high", "risk_reason": reason}, f"Warning signs on {deal}: {reason}.", confidence=0.92,
                  evidence=reason)
        for deal, reason in zip(AT_RISK, reasons)
    ]
    cases += [
        _proposal(f"revops-route-{lead}", "revops-bot", "crm", "assign_lead", ("lead", lead), {"assigned_to": "sue"},
                  "Territory and capacity fit.", confidence=0.95 if n < 4 else 0.8)
        for n, lead in enumerate(LEADS)
    ]
    return cases


def tiered_discounts() -> list[dict[str, Any]]:
    """Seed 000: a sales manager approves discounts; from 2,000 USD finance approves after them."""
    return [
        _proposal(f"discount-{DISCOUNTED[0]}", "deal-desk-bot", "crm", "apply_discount", ("opportunity", DISCOUNTED[0]),
                  {"discount_amount": "300.00"}, "Pricing history: 5% matches the customer's last renewal.",
                  amount="300.00", evidence="pricing history and renewal terms", observed={"discount_amount": None}),
        _proposal(f"discount-{DISCOUNTED[1]}", "deal-desk-bot", "crm", "apply_discount", ("opportunity", DISCOUNTED[1]),
                  {"discount_amount": "2500.00"}, "Multi-year commitment: 12% discount within the pricing guideline.",
                  amount="2500.00", evidence="pipeline analysis and pricing guideline", observed={"discount_amount": None}),
    ]


def logistics_exceptions() -> list[dict[str, Any]]:
    """Seed 003's mini-case: routine updates run (a new agent's first ones on the loop); exceptions go to queues."""
    routine = [
        _proposal(f"logistics-status-{s}", "dispatch-bot", "orders", "update_shipment_status", ("shipment", s),
                  {"status": "arrived_at_hub"}, "Carrier scan at the hub.", observed={"status": "in_transit"})
        for s in SHIPMENTS[:4]
    ] + [
        _proposal(f"logistics-match-D-{n}", "dispatch-bot", "orders", "match_document", ("document", f"D-{n}"),
                  {"matched": True}, "Bill of lading number and weight match the shipment.", confidence=0.82)
        for n in (5, 6)
    ]
    exceptions = [
        _proposal("logistics-failed-S-7", "dispatch-bot", "orders", "report_failed_delivery", ("shipment", "S-7"),
                  {"status": "delivery_failed"}, "Consignee absent twice.", impact="medium"),
        _proposal("logistics-documents-S-10", "dispatch-bot", "orders", "request_missing_documents", ("shipment", "S-10"),
                  {"documents": "requested"}, "Customs declaration missing.", impact="low"),
        _proposal("logistics-destination-S-8", "dispatch-bot", "orders", "correct_destination", ("shipment", "S-8"),
                  {"destination": "Bremen"}, "Address on the order says Bremen, the booking says Hamburg.", impact="high"),
        _proposal("logistics-damage-S-9", "dispatch-bot", "orders", "report_damage", ("shipment", "S-9"),
                  {"claim_amount": "180.00"}, "Photos show a crushed pallet corner.", amount="180.00"),
        _proposal("logistics-damage-S-11", "dispatch-bot", "orders", "report_damage", ("shipment", "S-11"),
                  {"claim_amount": "1400.00"}, "Water damage on the whole consignment.", amount="1400.00", impact="medium"),
        _proposal("logistics-dispute-S-12", "dispatch-bot", "orders", "open_payment_dispute", ("shipment", "S-12"),
                  {"disputed_amount": "95.00"}, "Customer disputes the demurrage charge.", amount="95.00"),
        _proposal("logistics-status-again-S-1", "dispatch-bot", "orders", "update_shipment_status", ("shipment", "S-1"),
                  {"status": "out_for_delivery"}, "Second scan for S-1 while the first update is still open.",
                  observed={"status": "in_transit"}),
    ]
    return routine + exceptions


def story_proposals() -> list[dict[str, Any]]:
    return revops_inbox() + tiered_discounts() + logistics_exceptions()


def seed_stories(agent: Integration) -> int:
    """Submit every story proposal once (their idempotency keys make a second run change nothing)."""
    for data in story_proposals():
        submit_proposal(agent, data)
    return len(story_proposals())


# ---- the trickle ------------------------------------------------------------------------------

def _fresh_record(data: dict[str, Any], suffix: str) -> dict[str, str]:
    """A copy of the story's target record under a new id, so trickled work lands on records of its own."""
    target = data["target"]
    source = SandboxRecord.objects.get(connector__slug=data["connector"], type=target["type"], record_id=target["id"])
    fresh = f"{target['id']}-{suffix}"
    _record(source.connector, target["type"], fresh, dict(source.data))
    return {"type": target["type"], "id": fresh}


def trickle(agent: Integration, count: int = 3, now: datetime | None = None) -> list[Proposal]:
    """A few new proposals from the simulated agents, different each call (beat calls this in `make run`)."""
    now = now or timezone.now()
    stamp = now.strftime("%Y%m%d%H%M%S%f")
    rng = random.Random(stamp)
    made = []
    for n in range(count):
        data = dict(rng.choice(story_proposals()))
        data["idempotency_key"] = f"trickle-{stamp}-{n}-{data['idempotency_key']}"[:200]
        data["confidence"] = rng.choice([0.95, 0.93, 0.85, 0.8, 0.65])
        data.pop("observed", None)  # the record moved on since the seed: only fresh reads may claim what they saw
        data["target"] = _fresh_record(data, f"{stamp[-8:]}{n}")  # a new shipment, deal or lead: no conflict with the seed's
        proposal, _ = submit_proposal(agent, data)
        made.append(proposal)
    return made
