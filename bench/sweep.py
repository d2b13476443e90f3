"""Benchmark of the beat's SLA and expiry sweeps: `.venv/bin/python bench/sweep.py [--open 100000]`.

Stores `--open` proposals waiting for review (one active tier each) on a fresh database, then
times, in one run and alternating, ours (approvals.sweeps: batched UPDATE ... RETURNING, bulk
history copy, bulk events) beside the reference the issue names: one set-based UPDATE of every
due row plus one bulk history insert, unbatched. Cases: none due, 10% due, all due (escalation),
and all due (expiry). Between rounds the rows are put back as they were. Set DATABASE_URL for
PostgreSQL. Targets (issue 14): none due <= 20 ms, all due <= 10 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench.django_setup  # noqa: E402,F401  (starts Django on a fresh database)

from django.contrib.auth.models import Group  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from approvals import sweeps  # noqa: E402
from approvals.models import Integration, Proposal, ReviewTask, Status  # noqa: E402
from connectors.models import Connector  # noqa: E402

CHUNK = 5000  # rows per ORM insert and per reset statement


def seed(count: int, now) -> None:
    """CHUNK proposals through the ORM, then copied in SQL until there are `count` (Python would take
    minutes to build 100,000 model instances on a busy 2-core machine); one active tier each."""
    integration = Integration.objects.create(name="bench")
    connector = Connector.objects.create(slug="helpdesk", name="Helpdesk", kind="sandbox", config={"actions": ["refund"]})
    finance, leads = Group.objects.create(name="finance"), Group.objects.create(name="finance-leads")
    Proposal.objects.bulk_create([
        Proposal(id=uuid.uuid4(), integration=integration, idempotency_key=f"bench-{n}", agent="refund-bot",
                 connector=connector, action="refund", target_type="order", target_id=f"A-{n}",
                 changes={"status": "refunded", "refund_amount": "120.00"}, confidence=0.9,
                 status=Status.PENDING_REVIEW, decision={"outcome": "review", "max_age_minutes": 60},
                 outcome="review", due_at=now + timedelta(hours=1), expires_at=now + timedelta(hours=2))
        for n in range(min(CHUNK, count))
    ])
    copy = 0
    while (have := Proposal.objects.count()) < count:
        copy += 1
        _copy_proposals(min(have, count - have), copy)
    _one_tier_each(finance.pk, leads.pk)
    analyze()  # a live table has planner statistics; a freshly filled one not yet


def _copy_proposals(rows: int, copy: int) -> None:
    qn, table = connection.ops.quote_name, connection.ops.quote_name(Proposal._meta.db_table)
    new_id = "lower(hex(randomblob(16)))" if connection.vendor == "sqlite" else "gen_random_uuid()"
    columns = [f.column for f in Proposal._meta.concrete_fields if f.column not in ("id", "idempotency_key")]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, idempotency_key, {', '.join(qn(c) for c in columns)})"
            f" SELECT {new_id}, idempotency_key || '-{copy}', {', '.join(qn(c) for c in columns)} FROM {table} LIMIT %s",
            [rows])


def _one_tier_each(group: int, escalation_group: int) -> None:
    task, proposal = (connection.ops.quote_name(m._meta.db_table) for m in (ReviewTask, Proposal))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {task} (proposal_id, position, group_id, escalation_group_id, state, sla_minutes, due_at,"
            f" required, mode, bulk_allowed, remind_fraction, signed_links)"
            f" SELECT p.id, 0, %s, %s, 'active', 60, p.due_at, 1, 'any', false, 0.75, false"
            f" FROM {proposal} p", [group, escalation_group])


def make_due(fraction: float, now) -> None:
    """The first `fraction` of tiers (by id) overdue, the rest not; nothing escalated yet."""
    cut = int(ReviewTask.objects.count() * fraction)
    ids = list(ReviewTask.objects.order_by("pk").values_list("pk", flat=True)[:cut])
    with transaction.atomic():
        ReviewTask.objects.update(escalated_at=None, due_at=now + timedelta(hours=1))
        for start in range(0, len(ids), CHUNK):
            ReviewTask.objects.filter(pk__in=ids[start:start + CHUNK]).update(due_at=now - timedelta(minutes=1))
        ReviewTask.history.all().delete()
    analyze()


def reset_expiry(now) -> None:
    with transaction.atomic():
        Proposal.objects.update(status=Status.PENDING_REVIEW, status_reason="", expires_at=now + timedelta(hours=2),
                                escalated_to=None)
        ReviewTask.objects.update(state=ReviewTask.State.ACTIVE)
        Proposal.history.all().delete()
        ReviewTask.history.all().delete()
    analyze()


def analyze() -> None:
    """Fresh planner statistics after the reset. A live table's are kept by autovacuum; rewriting every
    row at once, as only a benchmark does, leaves the planner sure no row is due, and PostgreSQL then
    plans the batch's statements for a handful of rows (seen on 2026-12-02: escalation several times
    slower than the same code after an ANALYZE)."""
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def reference_escalation(now) -> int:
    """One set-based UPDATE and one bulk history insert, unbatched."""
    task = connection.ops.quote_name(ReviewTask._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {task} SET escalated_at = %s WHERE state = 'active' AND due_at < %s AND escalated_at IS NULL",
                       [now, now])
        count = cursor.rowcount
        _reference_history(cursor, ReviewTask, "'SLA missed'", "t.escalated_at = %s", [now])
    return count


def reference_expiry(now) -> int:
    table = connection.ops.quote_name(Proposal._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET status = 'expired', status_reason = 'expired', due_at = NULL, updated_at = %s"
                       f" WHERE status IN ('pending_review', 'info_requested', 'triage') AND expires_at <= %s"
                       f" AND claimed_by_id IS NULL", [now, now])
        count = cursor.rowcount
        _reference_history(cursor, Proposal, "t.status_reason", "t.status = 'expired'", [])
    return count


def _reference_history(cursor, model, reason: str, where: str, params: list) -> None:
    history, qn = model.history.model, connection.ops.quote_name
    columns = [f.column for f in history._meta.concrete_fields if f.name not in sweeps.HISTORY_FIELDS]
    cursor.execute(
        f"INSERT INTO {qn(history._meta.db_table)} ({', '.join(qn(c) for c in columns)}, history_date,"
        f" history_change_reason, history_type, history_user_id) SELECT {', '.join('t.' + qn(c) for c in columns)},"
        f" %s, {reason}, '~', NULL FROM {qn(model._meta.db_table)} t WHERE {where}", [timezone.now(), *params])


def timed(function, *args) -> tuple[float, int]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def case(name: str, rounds: int, prepare, ours, reference) -> None:
    mine, theirs = [], []
    for _ in range(rounds):
        for label, run, into in (("ours", ours, mine), ("reference", reference, theirs)):
            prepare()
            seconds, rows = timed(run)
            into.append(seconds)
            print(f"  {name:<22} {label:<9} {seconds * 1000:10.1f} ms  {rows} rows", flush=True)
    ours_ms, ref_ms = statistics.median(mine) * 1000, statistics.median(theirs) * 1000
    print(f"{name:<24} ours {ours_ms:10.1f} ms   reference {ref_ms:10.1f} ms   ratio {ours_ms / max(ref_ms, 0.001):5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    now = timezone.now()
    started = time.perf_counter()
    seed(args.open, now)
    print(f"{connection.vendor}: {args.open} open proposals seeded in {time.perf_counter() - started:.1f} s")
    later = now + timedelta(hours=3)

    case("none due", 5, lambda: None,
         lambda: sweeps.escalate_overdue(now) + sweeps.expire_overdue(now),
         lambda: reference_escalation(now) + reference_expiry(now))
    for fraction in (0.1, 1.0):
        case(f"escalation {fraction:.0%} due", args.rounds, lambda f=fraction: make_due(f, now),
             lambda: sweeps.escalate_overdue(now), lambda: reference_escalation(now))
    case("expiry all due", args.rounds, lambda: reset_expiry(now),
         lambda: sweeps.expire_overdue(later), lambda: reference_expiry(later))


if __name__ == "__main__":
    main()
