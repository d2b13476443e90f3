"""Simulating a matrix version against stored proposals: known answers, nothing written, progress, Celery."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from approvals.facts import facts_as_dict
from approvals.models import Integration, Proposal, Status
from policies import engine, simulation
from policies.models import ApprovalMatrix, Rule, SimulationRun
from policies.services import new_draft
from tests.conftest import rule, wait_until
from tests.test_matrix_yaml_commands import board_spec

STATUS_OF = {"auto": Status.APPROVED, "review": Status.PENDING_REVIEW, "triage": Status.TRIAGE, "block": Status.BLOCKED}
KINDS = [  # connector, action, agent
    ("helpdesk", "refund", "refund-bot"), ("helpdesk", "credit", "refund-bot"), ("helpdesk", "update", "support-bot"),
    ("crm", "update", "crm-bot"), ("crm", "add_note", "crm-bot"), ("crm", "delete", "crm-bot"),
    ("email", "send_email", "mail-bot"),
]


def random_facts(rng: random.Random) -> engine.Facts:
    connector, action, agent = rng.choice(KINDS)
    money = action in ("refund", "credit")
    return engine.Facts(
        connector=connector, action=action, agent=agent,
        amount=Decimal(rng.choice(["12.50", "45.00", "99.99", "250.00", "999.99", "1000.00", "4200.00"])) if money else None,
        currency=rng.choice(["USD", "USD", "USD", "EUR"]) if money else "",
        confidence=rng.choice([0.3, 0.72, 0.85, 0.93, 0.99]), customer_impact=rng.choice(["none", "low", "high"]),
        present=frozenset(rng.choice([("target", "changes", "rationale"), ("target", "changes")])),
    )


def stored_proposals(sandbox, count: int, *, spec: engine.MatrixSpec | None = None, seed: int = 7) -> list[Proposal]:
    """`count` proposals decided by `spec` (the board's matrix) with their facts stored, in one bulk insert."""
    matrix = engine.compile_matrix(replace(spec or board_spec(), version=1))
    integration, _ = Integration.objects.get_or_create(name="sim-integration")
    connectors = {c.slug: c for c in (sandbox.crm, sandbox.helpdesk, sandbox.email)}
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        facts = random_facts(rng)
        decision = engine.decide(facts, matrix)
        rows.append(Proposal(
            integration=integration, idempotency_key=f"sim-{seed}-{n}", agent=facts.agent,
            connector=connectors[facts.connector], action=facts.action, amount=facts.amount, currency=facts.currency,
            confidence=facts.confidence, customer_impact=facts.customer_impact, outcome=decision.outcome,
            status=STATUS_OF[decision.outcome], matrix_version=1,
            decision={**decision.as_dict(), "facts": facts_as_dict(facts)},
        ))
    return Proposal.objects.bulk_create(rows, batch_size=500)


def blocks_refunds(people) -> ApprovalMatrix:
    spec = board_spec()
    return new_draft(replace(spec, rules=(rule("block-refunds", "block", actions=["refund"]), *spec.rules)), people.board1)


def expected_outcomes(proposals: list[Proposal]) -> tuple[Counter, Counter]:
    before = Counter(p.outcome for p in proposals)
    after = Counter("block" if p.action == "refund" else p.outcome for p in proposals)
    return before, after


def as_counts(counter: Counter) -> dict[str, int]:
    return {outcome: counter.get(outcome, 0) for outcome in engine.OUTCOMES}


def test_a_draft_that_blocks_refunds_moves_exactly_the_refunds_to_block(people, sandbox):
    proposals = stored_proposals(sandbox, 5000)
    draft = blocks_refunds(people)
    refunds = {str(p.pk) for p in proposals if p.action == "refund"}
    before, after = expected_outcomes(proposals)

    result = simulation.simulate(simulation.to_spec(draft))

    assert (result["considered"], result["simulated"]) == (5000, 5000)
    assert result["outcomes"] == {"before": as_counts(before), "after": as_counts(after)}
    assert result["changed_total"] == len(refunds)
    assert {item["id"] for item in result["changed"]} == refunds
    assert all(item["after"] == "block" and item["rules"] == ["block-refunds"] for item in result["changed"])
    assert sum(result["moves"].values()) == len(refunds)


def test_review_workload_per_group_drops_by_the_refund_reviews(people, sandbox):
    proposals = stored_proposals(sandbox, 600)
    draft = blocks_refunds(people)
    load_before, load_after = Counter(), Counter()
    for p in proposals:
        tiers = p.decision["tiers"] if p.outcome == "review" else []
        for t in tiers:
            load_before[t["group"]] += t["required"]
            if p.action != "refund":
                load_after[t["group"]] += t["required"]

    result = simulation.simulate(simulation.to_spec(draft))

    assert result["workload"]["before"] == dict(load_before)
    assert result["workload"]["after"] == {group: load_after.get(group, 0) for group in load_before}
    assert result["workload"]["before"]["finance"] > result["workload"]["after"]["finance"]


def test_the_live_version_against_its_own_decisions_changes_nothing(people, sandbox):
    stored_proposals(sandbox, 400)
    same = new_draft(board_spec(), people.board1)

    result = simulation.simulate(simulation.to_spec(same))

    assert result["changed_total"] == 0
    assert result["outcomes"]["before"] == result["outcomes"]["after"]


def test_simulating_writes_nothing_about_proposals(people, sandbox):
    stored_proposals(sandbox, 300)
    draft = blocks_refunds(people)
    snapshot = list(Proposal.objects.order_by("pk").values_list("pk", "status", "outcome", "decision", "updated_at"))

    simulation.simulate(simulation.to_spec(draft))

    assert list(Proposal.objects.order_by("pk").values_list("pk", "status", "outcome", "decision", "updated_at")) == snapshot
    assert Proposal.history.count() == 0


def test_proposals_without_stored_facts_are_skipped_and_counted(people, sandbox):
    stored_proposals(sandbox, 50)
    untouched = stored_proposals(sandbox, 3, seed=8)
    Proposal.objects.filter(pk=untouched[0].pk).update(decision={})
    Proposal.objects.filter(pk__in=[untouched[1].pk, untouched[2].pk]).update(
        decision={"outcome": "triage", "reasons": ["no approval matrix is published"], "facts": None}
    )

    result = simulation.simulate(simulation.to_spec(blocks_refunds(people)))

    assert (result["considered"], result["simulated"], result["skipped_no_facts"]) == (53, 50, 3)


def test_kill_switches_and_failed_previews_of_the_time_are_replayed(people, sandbox):
    facts = engine.Facts(connector="crm", action="add_note", agent="crm-bot", confidence=0.97,
                         present=frozenset({"target", "changes", "rationale"}))
    [switched, unpreviewed] = stored_proposals(sandbox, 2)
    forced = {"outcome": "review", "rules": ["auto-confident-notes"], "switches": ["agent=crm-bot: force_review"],
              "tiers": [{"group": "triage", "required": 1}], "facts": facts_as_dict(facts)}
    Proposal.objects.filter(pk=switched.pk).update(outcome="review", decision=forced)
    Proposal.objects.filter(pk=unpreviewed.pk).update(
        outcome="triage", preview_error="ConnectorError: timeout",
        decision={"outcome": "triage", "rules": ["auto-confident-notes"], "switches": [],
                  "facts": facts_as_dict(replace(facts, preview_failed=True))},
    )

    result = simulation.simulate(simulation.to_spec(new_draft(board_spec(), people.board1)))

    assert result["changed_total"] == 0
    assert result["outcomes"]["after"] == {"auto": 0, "on_the_loop": 0, "review": 1, "assisted": 0, "triage": 1, "block": 0}


def test_a_period_and_a_sample_choose_which_proposals_are_replayed(people, sandbox):
    proposals = stored_proposals(sandbox, 500)
    old = [p.pk for p in proposals[:200]]
    Proposal.objects.filter(pk__in=old).update(created_at=timezone.now() - timedelta(days=45))
    draft = simulation.to_spec(blocks_refunds(people))

    recent = simulation.simulate(draft, since=timezone.now() - timedelta(days=30))
    earlier = simulation.simulate(draft, until=timezone.now() - timedelta(days=30))
    sampled = simulation.simulate(draft, sample=120, seed=3)
    again = simulation.simulate(draft, sample=120, seed=3)

    assert (recent["considered"], earlier["considered"]) == (300, 200)
    assert earlier["changed_total"] == sum(1 for p in proposals[:200] if p.action == "refund")
    assert sampled["considered"] == 120
    assert sampled == {**again, "seconds": sampled["seconds"]}


def test_progress_is_reported_every_200_proposals(people, sandbox):
    stored_proposals(sandbox, 650)
    seen = []

    simulation.simulate(simulation.to_spec(blocks_refunds(people)), progress=lambda done, total: seen.append((done, total)))

    assert seen == [(0, 650), (200, 650), (400, 650), (600, 650), (650, 650)]


def test_a_run_queued_from_a_transaction_runs_on_commit_and_records_its_result(people, sandbox, django_capture_on_commit_callbacks):
    proposals = stored_proposals(sandbox, 450)
    draft = blocks_refunds(people)

    with django_capture_on_commit_callbacks(execute=True):
        run = simulation.start_run(draft, people.board1)

    run.refresh_from_db()
    assert (run.status, run.processed, run.total) == (SimulationRun.State.DONE, 450, 450)
    assert run.result["changed_total"] == sum(1 for p in proposals if p.action == "refund")
    assert run.started_at <= run.finished_at and run.created_by == people.board1


def test_a_redelivered_task_does_not_run_a_claimed_run_again(people, sandbox):
    stored_proposals(sandbox, 30)
    run = SimulationRun.objects.create(matrix=blocks_refunds(people))
    assert simulation.execute(run.pk) == "done"
    finished = SimulationRun.objects.get(pk=run.pk).finished_at

    assert simulation.execute(run.pk) == "nothing to do"
    assert SimulationRun.objects.get(pk=run.pk).finished_at == finished


def test_a_run_held_by_a_live_worker_is_left_alone_and_one_orphaned_by_a_dead_worker_is_taken_over(people, sandbox):
    stored_proposals(sandbox, 30)
    draft = blocks_refunds(people)
    alive = SimulationRun.objects.create(matrix=draft, status="running", heartbeat_at=timezone.now())
    orphaned = SimulationRun.objects.create(matrix=draft, status="running",
                                            heartbeat_at=timezone.now() - simulation.STALE_AFTER - timedelta(minutes=1))

    assert simulation.execute(alive.pk) == "busy"
    assert 0 < simulation.seconds_until_stale(alive.pk) <= simulation.STALE_AFTER.total_seconds() + 1
    assert simulation.execute(orphaned.pk) == "done"
    assert SimulationRun.objects.get(pk=orphaned.pk).processed == 30


def test_an_invalid_draft_fails_the_run_with_the_path_of_the_error(people, sandbox):
    stored_proposals(sandbox, 10)
    draft = new_draft(board_spec(), people.board1)
    Rule.objects.filter(matrix=draft, name="finance-large-refunds").update(currency="")  # an amount without a currency
    run = SimulationRun.objects.create(matrix=draft)

    assert simulation.execute(run.pk) == "failed"

    run.refresh_from_db()
    assert "rules[2].currency: required with amount_min or amount_max" in run.error
    assert run.result == {}


def test_the_command_prints_the_summary(people, sandbox):
    proposals = stored_proposals(sandbox, 300)
    draft = blocks_refunds(people)
    refunds = sum(1 for p in proposals if p.action == "refund")
    out = StringIO()

    call_command("simulate_matrix", str(draft.version), "--since", (timezone.now() - timedelta(days=1)).date().isoformat(),
                 stdout=out, stderr=StringIO())

    text = out.getvalue()
    assert f"matrix v{draft.version}: 300 of 300 proposals replayed" in text
    assert f"{refunds} proposals change outcome" in text
    block_line = next(line for line in text.splitlines() if line.startswith("block"))
    assert block_line.split()[-1] == f"+{refunds}"
    assert SimulationRun.objects.get().status == "done"


def test_the_command_names_a_bad_option(people, sandbox):
    draft = blocks_refunds(people)

    with pytest.raises(Exception, match="--sample: must be at least 1"):
        call_command("simulate_matrix", str(draft.version), "--sample", "0", stdout=StringIO(), stderr=StringIO())


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_runs_a_queued_simulation(people, sandbox, start_worker):
    stored_proposals(sandbox, 400)
    draft = blocks_refunds(people)
    start_worker()

    run = simulation.start_run(draft, people.board1)

    done = wait_until(lambda: SimulationRun.objects.filter(pk=run.pk, status="done").first(), message="the run to finish")
    assert done.processed == done.total == 400
    assert done.result["simulated"] == 400
