"""Benchmark of the board's dashboard (the admin index): `.venv/bin/python bench/dashboard.py`.

Writes a decided record (bench/records.py: 10% open, reviewed ones with verdicts) of --sizes
proposals (default 100,000 then 1,000,000, cumulative) on a fresh SQLite file under a temporary
HITL_VAR_DIR (set DATABASE_URL to measure PostgreSQL), then requests, as a board member through
Django's test client, the admin index with the dashboard and, for comparison, two plain changelists
(kill switches, an almost empty table; proposals). Prints the server time (median of --runs) and the
SQL queries of each page at each size. The test suite counts the dashboard's queries; this measures time.

The rows are loaded in bulk without history, so after each fill the daily rollup is counted again in
full (`board_days.refresh(everything=True)`, timed: beat's worst case), as beat would have kept it.
Beside the page it times the figures alone, from the rollup and counted live (`dashboard(live=True)`,
the computation the page ran before the rollup), and rolling up one day (the first view after midnight).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench.django_setup  # noqa: E402,F401  (starts Django on a fresh database)

from django.contrib.auth.models import Group  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402

from approvals import board, board_days  # noqa: E402
from approvals.demo import seed_matrix, seed_people, seed_systems  # noqa: E402
from approvals.models import Integration, Proposal  # noqa: E402
from bench.records import insert_proposals  # noqa: E402
from connectors.models import Connector  # noqa: E402

PAGES = {"dashboard (admin index)": "/admin/", "plain changelist: kill switches": "/admin/policies/killswitch/",
         "changelist: proposals": "/admin/approvals/proposal/"}


def measure(client: Client, url: str, runs: int) -> tuple[float, int]:
    seconds, queries = [], 0
    client.get(url, follow=True)  # untimed: a process's first request loads templates and modules (seconds)
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url, follow=True)  # a changelist may redirect to its default filter
            seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(captured)
    return statistics.median(seconds), queries


def timed(work, runs: int) -> tuple[float, int]:
    seconds, queries = [], 0
    connection.queries_log.clear()
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            work()
            seconds.append(time.perf_counter() - started)
        queries = len(captured)
    return statistics.median(seconds), queries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slowest", type=int, default=0, help="print the slowest N queries of each figures' run")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    seed_systems()
    users = seed_people()
    seed_matrix(users)
    client = Client()
    client.force_login(users["board-alice"])
    record = {"integration_id": Integration.objects.get_or_create(name="bench-agents")[0].pk,
              "connectors": {c.slug: c.pk for c in Connector.objects.all()},
              "review_group_id": Group.objects.get(name="sales").pk,
              "reviewer_ids": [u.pk for name, u in users.items() if name.startswith(("sales", "support", "finance"))]}
    written = 0
    for size in sorted(args.sizes):
        started = time.perf_counter()
        insert_proposals(size - written, batch=f"bench-{size}", **record)
        written = size
        print(f"{connection.vendor}: {Proposal.objects.count():,} proposals written in {time.perf_counter() - started:.1f} s")
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")  # what autovacuum does after a load: index-only scans see the rows
        started = time.perf_counter()
        board_days.refresh(everything=True)
        print(f"  rollup of the {board_days.WINDOW_DAYS} finished days counted in full: {time.perf_counter() - started:.1f} s")
        for label, url in PAGES.items():
            seconds, queries = measure(client, url, args.runs)
            print(f"  {label:34} {seconds * 1000:8.0f} ms  {queries:3} queries")
        yesterday = board_days.finished_days(days=1)[0]
        for label, work in (("figures from the rollup", board.dashboard),
                            ("figures counted live (before)", lambda: board.dashboard(live=True)),
                            ("rolling up one day", lambda: board_days.roll_up(yesterday))):
            seconds, queries = timed(work, args.runs)
            print(f"  {label:34} {seconds * 1000:8.0f} ms  {queries:3} queries")
            if args.slowest:
                for query in sorted(connection.queries[-queries:], key=lambda q: -float(q["time"]))[:args.slowest]:
                    print(f"      {float(query['time']) * 1000:7.0f} ms  {query['sql'][:150]}")


if __name__ == "__main__":
    main()
