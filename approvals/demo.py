"""The demo: teams, a sandbox CRM and helpdesk, a published matrix and a simulated agent's proposals.

Deterministic so a newcomer (and the browser tests) always see the same queues. Safe to run
twice: what exists is kept, and the simulated agent's idempotency keys make its proposals
land once.
"""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db import transaction

from approvals import demo_stories
from approvals.api_auth import create_api_key
from approvals.models import Integration, NotificationChannel, Proposal
from approvals.services import submit_proposal
from connectors.models import Connector, SandboxRecord
from policies.matrix_yaml import load_matrix
from policies.models import ApprovalMatrix
from policies.services import BOARD_GROUP, new_draft, publish_matrix, submit_matrix

DEMO_PASSWORD = "demo"
MATRIX_FILE = Path(__file__).resolve().parent.parent / "policies" / "examples" / "demo_matrix.yaml"

REVIEW_GROUPS = ("finance", "support", "sales", "triage", *demo_stories.STORY_GROUPS)
USERS = {  # username: groups
    "admin": (),
    "board-alice": (BOARD_GROUP,),
    "board-bob": (BOARD_GROUP,),
    "finance-fay": ("finance",),
    "finance-frank": ("finance",),
    "support-sam": ("support",),
    "sales-sue": ("sales",),
    "operator-olga": ("operators", "triage"),
    **demo_stories.STORY_USERS,
}
REVIEWER_PERMISSIONS = ["approvals.view_proposal", "approvals.review_proposal", "approvals.view_delegation",
                        "approvals.add_delegation", "approvals.view_oversighttask"]
PERMISSIONS = {
    "reviewer": REVIEWER_PERMISSIONS,
    # Refund amounts are sensitive on the sandbox helpdesk: finance decides them, so finance sees them.
    "finance": [*REVIEWER_PERMISSIONS, "approvals.see_sensitive"],
    "operators": ["approvals.view_proposal", "approvals.review_proposal", "approvals.operate_proposal",
                  "approvals.see_sensitive",
                  "connectors.view_connector", "connectors.view_execution", "connectors.view_sandboxrecord",
                  "connectors.view_rollbackbatch", "connectors.add_rollbackbatch", "approvals.view_callbackdelivery",
                  "approvals.view_outboxmessage", "approvals.view_delegation", "approvals.add_delegation",
                  "approvals.view_oversighttask",
                  "policies.view_killswitch", "policies.add_killswitch", "policies.view_approvalmatrix",
                  "ledger.view_event"],
    BOARD_GROUP: ["approvals.view_proposal", "policies.view_approvalmatrix", "policies.add_approvalmatrix",
                  "policies.change_approvalmatrix", "policies.view_rule", "policies.add_rule", "policies.change_rule",
                  "policies.delete_rule", "policies.view_reviewtier", "policies.add_reviewtier",
                  "policies.change_reviewtier", "policies.delete_reviewtier", "policies.view_budget",
                  "policies.add_budget", "policies.change_budget", "policies.delete_budget",
                  "policies.view_killswitch", "policies.add_killswitch", "policies.change_killswitch",
                  "approvals.view_breakglass", "policies.view_circuitbreaker",
                  "policies.add_circuitbreaker", "policies.change_circuitbreaker", "policies.view_simulationrun",
                  "policies.add_simulationrun", "ledger.view_event", "ledger.view_exceptioncategory",
                  "ledger.add_exceptioncategory", "ledger.change_exceptioncategory"],
}
CONNECTORS = {
    "crm": ("Sandbox CRM", ["update_opportunity", "update_account", "delete_record"]),
    "helpdesk": ("Sandbox helpdesk", ["refund", "credit", "discount", "set_status", "close_ticket", "public_reply", "delete_record"]),
    "email": ("Sandbox customer email", ["send_email"]),
}


def _perms(names: list[str]) -> list[Permission]:
    perms = []
    for name in names:
        app_label, codename = name.split(".")
        perms.append(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return perms


def seed_people() -> dict[str, object]:
    for name in (*REVIEW_GROUPS, "operators", BOARD_GROUP):
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*_perms(PERMISSIONS.get(name, PERMISSIONS["reviewer"])))
    users = {}
    User = get_user_model()
    for username, groups in USERS.items():
        user, created = User.objects.get_or_create(username=username, defaults={"is_staff": True})
        if created:
            user.is_superuser = username == "admin"
            user.set_password(username if username == "admin" else DEMO_PASSWORD)
            user.save()
        user.groups.add(*Group.objects.filter(name__in=groups))
        users[username] = user
    return users


def seed_channels(users: dict) -> None:
    """Every review group is emailed (the console backend: `make run` prints each message in its log)
    at its members' demo addresses, so assignments, reminders and outcomes show, with signed links."""
    for username, user in users.items():
        if not user.email:
            user.email = f"{username}@demo.example"
            user.save(update_fields=["email"])
    for name in (*REVIEW_GROUPS, "operators"):
        group = Group.objects.get(name=name)
        addresses = sorted(group.user_set.values_list("email", flat=True))
        NotificationChannel.objects.get_or_create(group=group, kind=NotificationChannel.Kind.EMAIL,
                                                  defaults={"emails": "\n".join(addresses)})


def seed_systems() -> None:
    for slug, (name, actions) in CONNECTORS.items():
        Connector.objects.get_or_create(slug=slug, defaults={"name": name, "kind": "sandbox", "config": {"actions": actions}})
    # Actions the agent carries out itself (the SDK's @governed functions, README): reviewed by the default tier.
    Connector.objects.get_or_create(slug="agent-tools", defaults={
        "name": "Agent's own tools", "kind": "client", "config": {"actions": {"send_invoice": "send"}}})
    crm, helpdesk, email = (Connector.objects.get(slug=s) for s in CONNECTORS)
    stages = ["Prospecting", "Qualification", "Proposal", "Negotiation"]
    for n in range(1, 13):
        _record(crm, "opportunity", f"O-{n}", {"name": f"Deal {n}", "stage": stages[n % 4], "amount": str(1000 * n), "owner": "sue"})
        _record(crm, "account", f"AC-{n}", {"name": f"Account {n}", "owner": "sue", "tier": "standard"})
    for n in range(1001, 1025):
        _record(helpdesk, "order", f"A-{n}", {"status": "delivered", "total": str(40 + (n % 7) * 180), "refund_amount": "0.00"})
        _record(helpdesk, "ticket", f"T-{n}", {"status": "open", "subject": f"Order A-{n}", "priority": "normal"})
        _record(email, "customer", f"C-{n}", {"email": f"customer{n}@example.com", "last_email_subject": ""})


def _record(connector: Connector, type_: str, record_id: str, data: dict) -> None:
    SandboxRecord.objects.get_or_create(connector=connector, type=type_, record_id=record_id, defaults={"data": data})


def seed_matrix(users: dict) -> ApprovalMatrix:
    """The board's rules of thumb, authored by one board member and published by another."""
    live = ApprovalMatrix.objects.filter(status="published").first()
    if live:
        return live
    draft = new_draft(load_matrix(MATRIX_FILE.read_text()), users["board-alice"], notes="demo rules of thumb")
    submit_matrix(draft, users["board-alice"])
    return publish_matrix(draft, users["board-bob"])


def simulated_proposals(count: int = 36) -> list[dict]:
    """A refund bot, a CRM assistant and a support mailer, across every route of the matrix."""
    rng = random.Random(7)
    cases = []
    for n in range(count):
        kind = n % 6
        order = f"A-{1001 + n % 24}"
        confidence = rng.choice([0.95, 0.93, 0.85, 0.78, 0.6, 0.97])
        if kind == 0:
            amount = rng.choice(["45.00", "80.00", "120.00", "640.00"])
            cases.append(_case(n, "refund-bot", "helpdesk", "refund", ("order", order), {"status": "refunded", "refund_amount": amount}, amount, confidence, "low"))
        elif kind == 1:
            amount = rng.choice(["1500.00", "2400.00"])
            cases.append(_case(n, "refund-bot", "helpdesk", "credit", ("order", order), {"refund_amount": amount}, amount, 0.92, "medium"))
        elif kind == 2:
            opp = f"O-{1 + n % 12}"
            cases.append(_case(n, "crm-assistant", "crm", "update_opportunity", ("opportunity", opp), {"stage": "Closed Won"}, None, confidence, "none"))
        elif kind == 3:
            cases.append(_case(n, "support-mailer", "email", "send_email", ("customer", f"C-{1001 + n % 24}"), {"last_email_subject": f"About your order {order}"}, None, 0.91, "medium"))
        elif kind == 4:
            cases.append(_case(n, "support-mailer", "helpdesk", "close_ticket", ("ticket", f"T-{1001 + n % 24}"), {"status": "solved"}, None, confidence, "low"))
        else:
            cases.append(_case(n, "crm-assistant", "crm", "delete_record", ("account", f"AC-{1 + n % 12}"), {}, None, 0.99, "high"))
    return cases


def _case(n, agent, connector, action, target, changes, amount, confidence, impact) -> dict:
    data = {
        "idempotency_key": f"demo-{n:03d}-{agent}-{action}", "agent": agent, "connector": connector, "action": action,
        "target": {"type": target[0], "id": target[1]}, "changes": changes, "confidence": confidence,
        "customer_impact": impact, "evidence": [{"title": f"Case {n}", "url": f"https://shop.example/cases/{n}", "excerpt": "Customer asked for help"}],
        "rationale": f"Simulated case {n} from the demo agent.", "context": {"demo": True},
    }
    if amount:
        data.update(amount=Decimal(amount), currency="USD")
    return data


def seed_demo(*, proposals: int = 36) -> dict:
    """Everything a newcomer needs to see real queues. Returns the demo key (new each run)."""
    with transaction.atomic():
        users = seed_people()
        seed_channels(users)
        seed_systems()
        demo_stories.seed_story_systems()
        seed_matrix(users)
        agent, _ = Integration.objects.get_or_create(name="demo-agent", defaults={"description": "simulated AI agents"})
    for data in simulated_proposals(proposals):
        submit_proposal(agent, data)
    demo_stories.seed_stories(agent)
    _, raw = create_api_key(agent, ["proposals:write", "proposals:read"])
    return {"api_key": raw, "proposals": Proposal.objects.count()}
