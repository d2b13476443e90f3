"""Benchmark of the whole submit path on the embedded default: `.venv/bin/python bench/submit.py`.

What an integration waits for when it POSTs a proposal, minus HTTP: validation is skipped,
everything else is real (sandbox preview read, facts with override rate and budgets, the
published demo matrix, the FSM transition and its history row, review tiers), on a fresh
SQLite file under a temporary HITL_VAR_DIR. Prints proposals/second and p50/p99 latency.
Options: --proposals 2000 (set DATABASE_URL to measure PostgreSQL instead).
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

import django  # noqa: E402
from django.core.management import call_command  # noqa: E402

from approvals.demo import seed_matrix, seed_people, seed_systems  # noqa: E402
from approvals.models import Integration  # noqa: E402
from approvals.services import submit_proposal  # noqa: E402


def proposal(n: int) -> dict:
    amount = ("45.00", "120.00", "1500.00")[n % 3]
    return {
        "idempotency_key": f"bench-{n}", "agent": "refund-bot", "connector": "helpdesk", "action": "refund",
        "target": {"type": "order", "id": f"A-{1001 + n % 24}"},
        "changes": {"status": "refunded", "refund_amount": amount}, "amount": Decimal(amount), "currency": "USD",
        "confidence": (0.95, 0.8, 0.6)[n % 3], "customer_impact": "low",
        "evidence": [{"title": f"Order {n}"}], "rationale": "benchmark", "context": {},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proposals", type=int, default=2000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    seed_systems()
    seed_matrix(seed_people())
    integration, _ = Integration.objects.get_or_create(name="bench")
    # Auto-approved proposals would queue executions: keep this a measure of submitting.
    from approvals import services

    services.enqueue_execution = lambda proposal: None
    latencies = []
    started = time.perf_counter()
    for n in range(args.proposals):
        t0 = time.perf_counter()
        submit_proposal(integration, proposal(n))
        latencies.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    engine = django.db.connection.vendor
    print(f"submit path on {engine}: {args.proposals} proposals in {total:.1f} s = {args.proposals / total:,.0f}/s; "
          f"p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms")


if __name__ == "__main__":
    main()
