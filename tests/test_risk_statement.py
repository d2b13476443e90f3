"""The decision's surroundings statement, written by hand (approvals.risk, approvals.facts.JUDGED_ROWS),
gives what the ORM's form of the same questions gives, on varied rows.

The ORM forms below are the readable definitions the statement replaced (the ORM compiling them was
a quarter of a submission's CPU): the agent's last WINDOW proposals flagged for the burst ratio, the
earlier actions and the amounts; the 99th percentile of those amounts by nearest rank; the other
open proposals on the record; the agent's judged proposals (`facts.judged_rows`, which circuit
breakers still read through the ORM).
"""

from __future__ import annotations

import math
import re
import random
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from approvals import facts, risk
from approvals.models import OPEN_STATUSES, Integration, OversightTask, Proposal, Status

AGENTS = ("busy-bot", "busy-bot", "busy-bot", "quiet-bot")  # busy-bot fills more than risk.WINDOW
ACTIONS = ("refund", "refund", "refund", "credit", "discount")
CURRENCIES = ("USD", "USD", "USD", "EUR", "")
OUTCOMES = ("review", "triage", "assisted", "on_the_loop", "auto")


def orm_behaviour(proposal: Proposal, hour_ago) -> tuple:
    recent = (Proposal.objects.filter(agent=proposal.agent).exclude(pk=proposal.pk).order_by("-created_at")
              .annotate(last_hour=risk.flag(Q(created_at__gte=hour_ago)), same_action=risk.flag(Q(action=proposal.action)),
                        same_amounts=risk.flag(Q(action=proposal.action, currency=proposal.currency, amount__isnull=False)))
              .values("pk", "created_at", "last_hour", "same_action", "same_amounts")[:risk.WINDOW])
    rows = list(recent)
    return (len(rows), min((row["created_at"] for row in rows), default=None), sum(row["last_hour"] for row in rows),
            sum(row["same_action"] for row in rows), sum(row["same_amounts"] for row in rows))


def orm_p99(proposal: Proposal, amounts: int) -> Decimal | None:
    if proposal.amount is None or amounts < risk.MIN_AMOUNTS:
        return None
    recent = Proposal.objects.filter(agent=proposal.agent).exclude(pk=proposal.pk).order_by("-created_at").values("pk")[:risk.WINDOW]
    from_top = amounts - math.ceil(0.99 * amounts)
    ranked = (Proposal.objects.filter(pk__in=recent, action=proposal.action, currency=proposal.currency,
                                      amount__isnull=False).order_by("-amount").values_list("amount", flat=True))
    return next(iter(ranked[from_top:from_top + 1]), None)


def orm_open(proposal: Proposal) -> int:
    if not proposal.target_id:
        return 0
    return (Proposal.objects.filter(connector_id=proposal.connector_id, target_type=proposal.target_type,
                                    target_id=proposal.target_id, status__in=OPEN_STATUSES)
            .exclude(pk=proposal.pk).count())


def orm_track(proposal: Proposal) -> tuple:
    listed = list(facts.judged_rows(proposal.agent, exclude=proposal.pk, action=proposal.action))
    return (len(listed), sum(r["overruled"] for r in listed), sum(r["overridden"] for r in listed),
            sum(r["overridden_here"] for r in listed))


@pytest.fixture
def varied_history(sandbox):
    """1,500 proposals of two agents over 40 days (some in the last hour), of every status and outcome,
    amounts spread out and tied, three currencies, five records, on-the-loop work in every state."""
    pick = random.Random(14)
    integration = Integration.objects.create(name="history")
    now = timezone.now()
    seconds = sorted(pick.sample(range(40 * 24 * 3600), 1500), reverse=True)
    seconds[-40:] = sorted(pick.sample(range(3600), 40), reverse=True)  # the last hour's
    rows = [Proposal(
        integration=integration, idempotency_key=f"h-{n}", agent=pick.choice(AGENTS),
        connector=pick.choice((sandbox.helpdesk, sandbox.helpdesk, sandbox.crm)), action=pick.choice(ACTIONS),
        target_type="order" if n % 7 else "", target_id=f"A-{1001 + n % 5}" if n % 7 else "",
        amount=None if n % 6 == 0 else Decimal("120.00") if n % 6 == 1 else Decimal(pick.randrange(100, 500_000)) / 100,
        currency=pick.choice(CURRENCIES), confidence=0.9, status=pick.choice(Status.values),
        outcome=pick.choice(OUTCOMES), edited=pick.random() < 0.2, created_at=now - timedelta(seconds=ago),
    ) for n, ago in enumerate(seconds)]
    Proposal.objects.bulk_create(rows, batch_size=500)
    group = Group.objects.create(name="oversight")
    OversightTask.objects.bulk_create([
        OversightTask(proposal=row, kind=OversightTask.Kind.AFTER_THE_FACT, group=group,
                      state=pick.choice(OversightTask.State.values))
        for row in rows if row.outcome == "on_the_loop" and pick.random() < 0.8])
    return rows, now


def probes(rows: list[Proposal], sandbox) -> list[Proposal]:
    """Stored proposals (each leaves itself out) and new ones, with and without an amount or a record."""
    pick = random.Random(3)
    stored = pick.sample(rows, 16)
    new = [Proposal(agent=agent, connector=sandbox.helpdesk, action=action, currency=currency, amount=amount,
                    target_type="order" if target else "", target_id=target)
           for agent in ("busy-bot", "quiet-bot", "new-bot") for action in ("refund", "credit")
           for currency in ("USD", "EUR") for amount in (None, Decimal("120.00")) for target in ("", "A-1002")]
    return stored + new


def test_the_hand_written_statement_agrees_with_the_orm_on_varied_rows(varied_history, sandbox):
    rows, now = varied_history
    hour_ago = now - risk.HOUR
    checked_p99 = 0
    for proposal in probes(rows, sandbox):
        (track,), seen = risk.surroundings(proposal, facts.judged_part(proposal), now=now)
        (fast,) = risk.one_row(risk.behaviour_part(proposal, hour_ago))

        n, oldest, last_hour, same_action, amounts = orm_behaviour(proposal, hour_ago)
        assert (fast[0], risk._instant(fast[1]), fast[2] or 0, fast[3] or 0, fast[4] or 0) == \
            (n, oldest, last_hour, same_action, amounts), proposal.idempotency_key
        expected = risk.Behaviour(risk._burst_ratio(n, last_hour, oldest, hour_ago), same_action, amounts)
        assert (seen["burst_ratio"], seen["prior_actions"]) == (expected.burst_ratio, expected.prior_actions)
        p99 = orm_p99(proposal, amounts)
        assert seen["amount_p99"] == p99 and str(seen["amount_p99"]) == str(p99), proposal.idempotency_key
        assert seen["open_on_record"] == orm_open(proposal)
        assert tuple(value or 0 for value in track) == orm_track(proposal)
        checked_p99 += p99 is not None
    assert checked_p99 >= 10  # the data reaches the percentile's threshold often enough to compare it


def test_the_varied_rows_reach_every_branch_the_statement_has(varied_history, sandbox):
    """The comparison above means something only if the data fills the window, the last hour, the
    track record's window and each way of being judged."""
    busy = Proposal.objects.filter(agent="busy-bot")
    assert busy.count() > risk.WINDOW
    assert busy.filter(created_at__gte=timezone.now() - risk.HOUR).exists()
    judged = facts.judged_rows("busy-bot", window=10_000)
    assert len(judged) > facts.OVERRIDE_WINDOW
    kinds = Proposal.objects.filter(agent="busy-bot").aggregate(
        rolled_back=Count("pk", filter=Q(outcome="on_the_loop", oversight__state=OversightTask.State.ROLLED_BACK)),
        dismissed=Count("pk", filter=Q(outcome="assisted", status=Status.DISMISSED)),
        edited=Count("pk", filter=Q(edited=True, outcome="review")))
    assert all(kinds[name] for name in ("rolled_back", "dismissed", "edited"))


def surroundings_plan(proposal: Proposal) -> str:
    """The plan of the decision's statement for `proposal`, as the backend's planner would run it on a live table:
    on PostgreSQL with the table's statistics taken (autovacuum would have) and sequential scans priced out (on a
    test's few rows a scan costs about nothing, on a real table it does not)."""
    hour_ago = timezone.now() - risk.HOUR
    parts = [risk.behaviour_part(proposal, hour_ago), facts.judged_part(proposal), risk.top_part(proposal, hour_ago)]
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            statement, params = risk.statement(*parts)
            cursor.execute("EXPLAIN QUERY PLAN " + statement, params)
            return "\n".join(str(row[-1]) for row in cursor.fetchall())
        with transaction.atomic():
            cursor.execute("ANALYZE approvals_proposal")
            cursor.execute("SET LOCAL enable_seqscan = off")
            statement, params = risk.statement(*parts)
            cursor.execute("EXPLAIN " + statement, params)
            return "\n".join(row[0] for row in cursor.fetchall())


@pytest.fixture
def many_agents(sandbox):
    """2,900 proposals of 29 agents, then an agent whose work mostly ran alone: 1,000 automatic, 5 reviewed."""
    integration = Integration.objects.create(name="many")
    now = timezone.now()
    rows = [Proposal(integration=integration, idempotency_key=f"m-{n}", agent=f"agent-{n % 29}", connector=sandbox.helpdesk,
                     action="refund", amount=Decimal(n % 500), currency="USD", confidence=0.9,
                     status=Status.REJECTED if n % 3 == 0 else Status.EXECUTED, outcome="review" if n % 2 else "auto",
                     created_at=now - timedelta(seconds=n)) for n in range(2900)]
    rows += [Proposal(integration=integration, idempotency_key=f"alone-{n}", agent="mostly-alone-bot",
                      connector=sandbox.helpdesk, action="refund", amount=Decimal(n % 500), currency="USD", confidence=0.9,
                      status=Status.EXECUTED, outcome="review" if n % 200 == 199 else "auto",
                      created_at=now - timedelta(seconds=n)) for n in range(1000)]
    Proposal.objects.bulk_create(rows, batch_size=500)


def test_a_submission_reads_its_agents_history_from_indexes_alone(many_agents, sandbox):
    """The agent's track record comes from the partial index of what people may have judged: an agent whose work
    mostly runs alone is not read back, row by row, to its last review. Its last 1,000 proposals come from
    proposal_agent_recent, which holds every column read: SQLite reads that index alone. (PostgreSQL reads an index
    alone only where its visibility map says the rows are visible to all, which a test's uncommitted rows never are;
    it reads the agent's rows through an index.)"""
    probe = Proposal(agent="mostly-alone-bot", connector=sandbox.helpdesk, action="refund", currency="USD",
                     amount=Decimal("120.00"))

    plan = surroundings_plan(probe)

    assert "proposal_agent_judged" in plan, plan
    if connection.vendor == "sqlite":
        assert plan.count("USING COVERING INDEX proposal_agent_recent") == 2, plan  # the behaviour and the top amounts
        assert not re.search(r"^SCAN (approvals_proposal|p)$", plan, re.M), plan  # a SEARCH seeks, a SCAN reads all
    else:
        assert "Seq Scan on approvals_proposal" not in plan, plan
