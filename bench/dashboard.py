"""Benchmark of the board's dashboard (the admin index): `.venv/bin/python bench/dashboard.py`.

Writes a decided record (bench/records.py: 10% open, reviewed ones with verdicts) of --sizes
proposals (default 100,000 then 1,000,000, cumulative) on a fresh SQLite file under a temporary
HITL_VAR_DIR (set DATABASE_URL to measure PostgreSQL), then requests, as a board member through
Django's test client, the admin index with the dashboard and, for comparison, two plain changelists
(kill switches, an almost empty table; proposals). Prints the server time (median of --runs) and the
SQL queries of each page at each size. The test suite counts the dashboard's queries; this measures time.
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

from approvals.demo import seed_matrix, seed_people, seed_systems  # noqa: E402
from approvals.models import Integration, Proposal  # noqa: E402
from bench.records import insert_proposals  # noqa: E402
from connectors.models import Connector  # noqa: E402

PAGES = {"dashboard (admin index)": "/admin/", "plain changelist: kill switches": "/admin/policies/killswitch/",
         "changelist: proposals": "/admin/approvals/proposal/"}


def measure(client: Client, url: str, runs: int) -> tuple[float, int]:
    seconds, queries = [], 0
    for _ in range(runs):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url, follow=True)  # a changelist may redirect to its default filter
            seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, (url, response.status_code)
        queries = len(captured)
    return statistics.median(seconds), queries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
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
        for label, url in PAGES.items():
            seconds, queries = measure(client, url, args.runs)
            print(f"  {label:34} {seconds * 1000:8.0f} ms  {queries:3} queries")


if __name__ == "__main__":
    main()
