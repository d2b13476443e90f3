"""When more than one batch is due, PostgreSQL sweeps on several connections side by side: every
overdue tier still escalates once and every aged-out proposal expires once, each with one history
row, one notification and one callback, and the decision log stays one unbroken chain. SQLite,
which has one writer, sweeps on one connection."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.utils import timezone

from approvals import services, sweeps
from approvals.models import CallbackDelivery, Notification, Proposal, ReviewTask, Status
from ledger.verify import verify
from tests.conftest import matrix_spec, reload, rule, tier

pytestmark = pytest.mark.matrix(matrix_spec(
    rule("refunds", "review", actions=["refund"], currency="USD", amount_min=Decimal("100"),
         tiers=(tier("finance", sla_minutes=60, escalation_group="finance-leads"),), max_age_minutes=120),
))
DUE = 14  # five batches of three
on_postgresql = pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite sweeps on one connection")


@pytest.fixture
def batches(monkeypatch, settings) -> list[tuple[str, int]]:
    """Batches of three on up to three connections; returns (thread name, rows claimed) of each batch
    that claimed rows. Each claim is held a moment inside its transaction, so that while one
    connection holds its rows the others must claim other rows or none."""
    monkeypatch.setattr(sweeps, "BATCH", 3)
    settings.SWEEP_CONNECTIONS = 3
    claims: list[tuple[str, int]] = []
    for name in ("_escalate_batch", "_expire_batch"):
        def held(now, claim=getattr(sweeps, name)):
            rows = claim(now)
            if rows:
                claims.append((threading.current_thread().name, len(rows)))
                time.sleep(0.2)
            return rows
        monkeypatch.setattr(sweeps, name, held)
    return claims


def connections_used(claims: list[tuple[str, int]]) -> int:
    assert max(rows for _, rows in claims) <= sweeps.BATCH, claims  # a batch never claims more than its size
    return len({thread for thread, _ in claims})


@pytest.fixture
def waiting(submit, people, channel) -> list[Proposal]:
    people.make("head-of-finance", "finance-leads")
    channel("finance-leads")
    return [submit(amount="120.00", callback_url="https://agent.example/hook") for _ in range(DUE)]


def escalations(task: ReviewTask) -> list[str]:
    return list(task.history.filter(history_change_reason__startswith="SLA missed")
                .values_list("history_change_reason", flat=True))


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_many_overdue_tiers_escalate_once_each_on_several_connections(waiting, batches):
    tasks = [services.active_task(proposal) for proposal in waiting]
    later = max(task.due_at for task in tasks) + timedelta(seconds=1)

    assert services.escalate_overdue(now=later) == DUE
    assert services.escalate_overdue(now=later) == 0

    assert connections_used(batches) >= 2, batches
    leads = Group.objects.get(name="finance-leads")
    for proposal, task in zip(waiting, tasks):
        assert reload(task).escalated_at == later
        assert escalations(task) == ["SLA missed: escalated to finance-leads"]
        assert reload(proposal).escalated_to == leads
        assert Notification.objects.filter(task=task, event="escalated").count() == 1
    assert verify().intact


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_many_aged_out_proposals_expire_once_each_on_several_connections(waiting, batches):
    later = timezone.now() + timedelta(hours=3)

    assert services.expire_overdue(now=later) == DUE
    assert services.expire_overdue(now=later) == 0

    assert connections_used(batches) >= 2, batches
    for proposal in waiting:
        assert reload(proposal).status == Status.EXPIRED
        assert proposal.history.filter(status=Status.EXPIRED).count() == 1
        assert set(proposal.review_tasks.values_list("state", flat=True)) == {ReviewTask.State.CLOSED}
        assert CallbackDelivery.objects.filter(proposal=proposal, event="proposal.expired").count() == 1
    assert verify().intact


@pytest.mark.skipif(connection.vendor == "postgresql", reason="PostgreSQL sweeps side by side (above)")
def test_sqlite_sweeps_every_batch_on_its_one_connection(waiting, batches):
    later = timezone.now() + timedelta(hours=3)

    assert services.escalate_overdue(now=later) == DUE
    assert services.expire_overdue(now=later) == DUE

    assert connections_used(batches) == 1 and batches[0][0] == threading.current_thread().name
    assert len(batches) == 10
    assert verify().intact
