"""Benchmark of the reviewer's inbox and decision page at scale: `.venv/bin/python bench/inbox.py --proposals 100000`.

Fills a fresh database (SQLite under a temporary HITL_VAR_DIR, or DATABASE_URL) with the demo's
people, systems and matrix, a few proposals submitted for real, then `--proposals` more inserted
in bulk with one INSERT ... SELECT (a tenth open and waiting for finance, support or sales, with
their active review tiers; the rest finished). Then, as finance-fay through Django's test client
(the whole admin view: middleware, session, templates), it times the inbox ("my work") and a
decision page, and beside them, on the same rows, the stock Django admin changelist of proposals
(a plain ModelAdmin on a second admin site). Prints the server time (median and max of --rounds), this
process's CPU time, and the SQL queries of each page; with --costs, on PostgreSQL, each page's queries'
execution time as the database measures it (EXPLAIN ANALYZE), which a loaded machine disturbs much less.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench.django_setup  # noqa: E402,F401  (starts Django on a fresh database)

from django.conf import settings  # noqa: E402
from django.contrib import admin  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import path, reverse  # noqa: E402

from approvals.demo import seed_matrix, seed_people, seed_systems  # noqa: E402
from approvals.models import Integration, Proposal, ReviewTask  # noqa: E402
from approvals.services import submit_proposal  # noqa: E402
from hitlgov import urls as project_urls  # noqa: E402


class PlainProposalAdmin(admin.ModelAdmin):
    """The reference: what a stock changelist of the same rows costs (Django's own COUNTs and paging)."""

    list_display = ["agent", "action", "target_id", "amount", "status", "due_at"]
    list_filter = ["status"]


plain_site = admin.AdminSite(name="plain")
plain_site.register(Proposal, PlainProposalAdmin)
# The project's own routes (the admin's templates link to the API docs and the rest), plus the reference's site.
urlpatterns = [path("plain/", plain_site.urls), *project_urls.urlpatterns]


def submitted(n: int, integration: Integration) -> Proposal:
    amount = ("120.00", "1500.00")[n % 2]
    data = {
        "idempotency_key": f"real-{n}", "agent": "refund-bot", "connector": "helpdesk", "action": "refund",
        "target": {"type": "order", "id": f"A-{1001 + n % 24}"},
        "changes": {"status": "refunded", "refund_amount": amount}, "amount": Decimal(amount), "currency": "USD",
        "confidence": 0.93, "customer_impact": "low", "evidence": [{"title": f"Order {n}"}], "rationale": "benchmark",
        "context": {},
    }
    return submit_proposal(integration, data)[0]


def numbers(count: int) -> str:
    """A CTE `n(i)` of 1..count on either database."""
    if connection.vendor == "postgresql":
        return f"WITH n(i) AS (SELECT generate_series(1, {count}))"
    return f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})"


def minutes_from_now(expression: str) -> str:
    if connection.vendor == "postgresql":
        return f"(now() + ({expression}) * interval '1 minute')"
    return f"strftime('%Y-%m-%d %H:%M:%f', 'now', ({expression}) || ' minutes')"


def bulk_insert(count: int, template: Proposal) -> None:
    """`count` proposals copied from a real one in one statement: every tenth open and waiting for a group."""
    groups = [Group.objects.get(name=name).pk for name in ("finance", "support", "sales")]
    table = Proposal._meta.db_table
    columns = [field.column for field in Proposal._meta.concrete_fields]
    is_open = "i % 10 = 0"
    pick_group = f"CASE i % 3 WHEN 0 THEN {groups[0]} WHEN 1 THEN {groups[1]} ELSE {groups[2]} END"
    generated = {
        # Ascending keys: each row lands at the end of the primary key's index instead of on a random page
        # (random UUIDs made the 1,000,000-row fill rewrite the whole index for every few rows).
        "id": ("('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid" if connection.vendor == "postgresql"
               else "printf('00000000000040008000%012x', i)"),
        "idempotency_key": "'bulk-' || i",
        "target_id": "'A-' || (i % 5000)",
        "amount": "(i % 2000) + 0.5",
        "status": f"CASE WHEN {is_open} THEN 'pending_review' WHEN i % 7 = 0 THEN 'rejected' ELSE 'executed' END",
        "active_group_id": f"CASE WHEN {is_open} THEN {pick_group} END",
        "due_at": f"CASE WHEN {is_open} THEN {minutes_from_now('(i % 600) - 60')} END",
        "created_at": minutes_from_now("-(i % 100000)"),
        "updated_at": minutes_from_now("0"),
        "escalated_to_id": "NULL", "held_by_id": "NULL", "held_until": "NULL", "claimed_by_id": "NULL",
    }
    template_id = template.pk.hex if connection.vendor == "sqlite" else template.pk  # a UUID: safe to inline
    select = ", ".join(generated.get(column, f"t.{connection.ops.quote_name(column)}") for column in columns)
    quoted = ", ".join(connection.ops.quote_name(column) for column in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"{numbers(count)} INSERT INTO {table} ({quoted}) "
                       f"SELECT {select} FROM n, {table} t WHERE t.id = '{template_id}'")
        tier = {  # the open proposals' active tiers; every other column gets its model default (or NULL)
            "proposal_id": "id", "position": "0", "group_id": "active_group_id", "required": "1", "mode": "'any'",
            "bulk_allowed": "false", "sla_minutes": "240", "due_at": "due_at", "state": "'active'",
            "remind_fraction": "0.75", "signed_links": "false",
        }
        tier_columns = [field.column for field in ReviewTask._meta.concrete_fields if field.column != "id"]
        cursor.execute(
            f"INSERT INTO {ReviewTask._meta.db_table} ({', '.join(tier_columns)}) "
            f"SELECT {', '.join(tier.get(column, 'NULL') for column in tier_columns)} FROM {table} "
            "WHERE idempotency_key LIKE 'bulk-%' AND status = 'pending_review'")
        if connection.vendor == "postgresql":  # as autovacuum would soon; Django never runs ANALYZE on SQLite
            cursor.execute("ANALYZE")


def measure(client: Client, url: str, rounds: int) -> tuple[float, float, float, list[dict]]:
    """(median ms, max ms, median CPU ms of this process, the queries) of GETting url."""
    client.get(url)  # warm: templates, content types
    times, cpu = [], []
    for _ in range(rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    return statistics.median(times), max(times), statistics.median(cpu), captured.captured_queries


def execution_ms(sql: str, runs: int = 7) -> float:
    """The database's own time for a query (PostgreSQL's EXPLAIN ANALYZE, median of runs): what a loaded
    machine disturbs much less than the wall clock of a request."""
    times = []
    with connection.cursor() as cursor:
        for _ in range(runs):
            cursor.execute("EXPLAIN (ANALYZE, TIMING OFF) " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            times.append(float(plan.rsplit("Execution Time: ", 1)[1].split()[0]))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proposals", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--slowest", type=int, default=0, help="also print each page's N slowest queries")
    parser.add_argument("--costs", action="store_true",
                        help="PostgreSQL: also print each query's execution time as the database measures it")
    args = parser.parse_args()
    settings.ROOT_URLCONF = __name__
    call_command("migrate", verbosity=0)
    seed_systems()
    seed_matrix(seed_people())
    integration, _ = Integration.objects.get_or_create(name="bench")
    from approvals import lifecycle

    lifecycle.enqueue_execution = lambda *a, **k: None  # nothing here executes
    started = time.perf_counter()
    if not Proposal.objects.filter(idempotency_key="real-0").exists():  # a kept HITL_VAR_DIR is filled once
        real = [submitted(n, integration) for n in range(20)]
        bulk_insert(args.proposals, real[0])
    real = [Proposal.objects.get(idempotency_key="real-0")]
    filled = time.perf_counter() - started
    total = Proposal.objects.count()
    open_count = Proposal.objects.filter(status="pending_review").count()
    print(f"{connection.vendor}: {total:,} proposals ({open_count:,} open), bulk insert {filled:.1f} s")

    client = Client()
    client.force_login(get_user_model().objects.get(username="finance-fay"))
    pages = [
        ("inbox: my work (ours)", reverse("admin:approvals_proposal_changelist") + "?queue=mine"),
        ("inbox: everything I can see (ours)", reverse("admin:approvals_proposal_changelist") + "?queue=all"),
        ("decision page (ours)", reverse("admin:approvals_proposal_change", args=[real[0].pk])),
        ("stock admin changelist, same rows", reverse("plain:approvals_proposal_changelist")),
        ("stock admin changelist, status=pending_review", reverse("plain:approvals_proposal_changelist") + "?status__exact=pending_review"),
    ]
    print(f"{'page':48} {'median ms':>10} {'max ms':>8} {'CPU ms':>7} {'queries':>8} {'SQL ms':>7}")
    for name, url in pages:
        median, worst, cpu, queries = measure(client, url, args.rounds)
        sql_ms = sum(float(query["time"]) for query in queries) * 1000  # of one more request, as the database reports
        print(f"{name:48} {median:10.1f} {worst:8.1f} {cpu:7.1f} {len(queries):8d} {sql_ms:7.0f}")
        for query in sorted(queries, key=lambda q: -float(q["time"]))[: args.slowest]:
            print(f"    {float(query['time']) * 1000:8.1f} ms  {query['sql'][:600]}")
        if args.costs and connection.vendor == "postgresql":
            # Reads only: EXPLAIN ANALYZE runs what it explains (the decision page's hold is an UPDATE).
            reads = [query["sql"] for query in queries if query["sql"].lstrip().upper().startswith(("SELECT", "WITH"))]
            costs = [execution_ms(sql) for sql in reads]
            print(f"    database execution time of its {len(reads)} reads: {sum(costs):.1f} ms; the largest: "
                  + ", ".join(f"{ms:.1f}" for ms in sorted(costs, reverse=True)[:3]))


if __name__ == "__main__":
    main()
