"""Simulating the live version reproduces what production decided, proposal by proposal.

Everything that decides an outcome is an engine input stored with the decision (the facts,
including a failed preview, a person's edit and a release to review, plus the switches that
applied), so a replay of the live version changes nothing. These tests drive real submissions,
edits, releases, switches and failed previews through the services, then replay.
"""

from __future__ import annotations

import itertools
import random
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from approvals import services
from approvals.models import Integration, Proposal, Status
from policies import simulation
from policies.matrices import to_spec
from policies.models import ApprovalMatrix, MatrixStatus
from policies.services import engage_switch, release_switch
from tests.conftest import proposal_body, reload
from tests.test_policy_monotonic import specs

HELPDESK_ACTIONS = ["refund", "credit", "set_status", "close_ticket", "public_reply"]
CRM_ACTIONS = ["update_opportunity", "update_account"]
keys = itertools.count()  # hypothesis reruns examples in one database: every submission needs a fresh key


def replay_live(since=None) -> dict:
    live = ApprovalMatrix.objects.get(status=MatrixStatus.PUBLISHED)
    return simulation.simulate(to_spec(live), since=since)


def assert_reproduced(result: dict, expected_count: int) -> None:
    assert result["considered"] == expected_count
    assert result["simulated"] == expected_count, result  # none skipped: every decision stored its facts
    assert result["changed"] == [] and result["changed_total"] == 0, result["changed"][:5]


def random_proposal(rng: random.Random, n: int) -> dict:
    """A proposal on the sandbox helpdesk or CRM; O-404 does not exist, so its preview fails."""
    connector = rng.choice(["helpdesk", "crm"])
    action = rng.choice(HELPDESK_ACTIONS if connector == "helpdesk" else CRM_ACTIONS)
    target = ("order", f"A-{rng.randint(1001, 1006)}") if connector == "helpdesk" else ("opportunity", rng.choice(["O-1", "O-404"]))
    amount = rng.choice([None, "20.00", "450.00", "4999.99"])
    body = proposal_body(
        idempotency_key=f"replay-{n}-{next(keys)}", agent=rng.choice(["bot-a", "bot-b", "refund-bot"]), connector=connector,
        action=action, target={"type": target[0], "id": target[1]},
        changes={rng.choice(["status", "stage", "notes", "email"]): rng.choice(["refunded", "Won", "x"])},
        confidence=rng.choice([0.2, 0.75, 0.97]), customer_impact=rng.choice(["none", "low", "medium", "high"]),
        amount=amount, currency="USD" if amount else None,
    )
    body["amount"] = Decimal(body["amount"]) if "amount" in body else None
    return body


def stir(rng: random.Random, proposals: list[Proposal], people) -> None:
    """What people do to the stored work: edit then approve, release from triage, reject."""
    for proposal in proposals:
        proposal = reload(proposal)
        roll = rng.random()
        if proposal.status == Status.TRIAGE and roll < 0.6:
            services.send_to_review(proposal.pk, people.operator, "looked at it")
        elif proposal.status == Status.PENDING_REVIEW and roll < 0.5:
            task = services.active_task(proposal)
            editor = people.make(f"editor-{proposal.pk.hex[:8]}", task.group.name)
            services.record_verdict(proposal.pk, editor, "approve", changes={**proposal.changes, "notes": "edited"})
        elif proposal.status == Status.PENDING_REVIEW and roll < 0.7:
            task = services.active_task(proposal)
            judge = people.make(f"judge-{proposal.pk.hex[:8]}", task.group.name)
            services.record_verdict(proposal.pk, judge, "reject", "not this one")


def test_replaying_the_live_demo_matrix_reproduces_every_stored_outcome(db, people):
    call_command("seed_demo")
    stir(random.Random(3), list(Proposal.objects.all()), people)

    assert_reproduced(replay_live(), Proposal.objects.count())


def test_switches_failed_previews_edits_and_releases_are_replayed_as_decided(people, sandbox, demo_matrix):
    integration = Integration.objects.create(name="replay-bot")
    rng = random.Random(11)
    submitted = []
    for n in range(60):
        if n == 20:
            switch = engage_switch(scope="agent", value="bot-a", mode="force_review", reason="incident", user=people.board1)
        if n == 40:
            release_switch(switch, reason="over", user=people.board1)
        submitted.append(services.submit_proposal(integration, random_proposal(rng, n))[0])
    stir(rng, submitted, people)

    stored = Proposal.objects.all()
    assert stored.exclude(preview_error="").exists()  # O-404 does not exist: a failed preview is among them
    assert stored.filter(edited=True).exists()
    assert stored.filter(decision__released_from_hold_by="operator").exists()
    assert stored.exclude(decision__switches=[]).exists()
    assert_reproduced(replay_live(), stored.count())


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=specs(max_rules=5), seed=st.integers(0, 10_000))
def test_replaying_a_random_live_matrix_reproduces_every_stored_outcome(publish, sandbox, people, spec, seed):
    publish(spec)
    integration, _ = Integration.objects.get_or_create(name="replay-bot")
    rng, since = random.Random(seed), timezone.now()
    submitted = [services.submit_proposal(integration, random_proposal(rng, next(keys)))[0] for n in range(15)]
    stir(rng, submitted, people)

    assert_reproduced(replay_live(since=since), len(submitted))
