"""Benchmark of simulating a matrix against stored proposals: `.venv/bin/python bench/simulation.py`.

Submits --proposals proposals (default 5000) through the real submit path on a fresh SQLite file
under a temporary HITL_VAR_DIR (set DATABASE_URL to measure PostgreSQL), then times
policies.simulation.simulate of the live demo matrix over all of them, --runs times.
The test suite checks what a simulation answers; how fast it answers is measured here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench.django_setup  # noqa: E402,F401  (starts Django on a fresh database)

import django  # noqa: E402
from django.core.management import call_command  # noqa: E402

from approvals import services  # noqa: E402
from approvals.demo import seed_matrix, seed_people, seed_systems  # noqa: E402
from approvals.models import Integration  # noqa: E402
from bench.submit import proposal  # noqa: E402
from policies import simulation  # noqa: E402
from policies.matrices import to_spec  # noqa: E402
from policies.models import ApprovalMatrix, MatrixStatus  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proposals", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    seed_systems()
    seed_matrix(seed_people())
    integration, _ = Integration.objects.get_or_create(name="bench")
    services.enqueue_execution = lambda proposal: None  # measure simulating, not executing
    for n in range(args.proposals):
        services.submit_proposal(integration, proposal(n))
    spec = to_spec(ApprovalMatrix.objects.get(status=MatrixStatus.PUBLISHED))
    seconds = []
    for _ in range(args.runs):
        started = time.perf_counter()
        result = simulation.simulate(spec)
        seconds.append(time.perf_counter() - started)
    assert result["simulated"] == args.proposals, result["simulated"]
    print(f"simulate on {django.db.connection.vendor}: {args.proposals} proposals, median {statistics.median(seconds):.2f} s "
          f"(min {min(seconds):.2f}, max {max(seconds):.2f}) over {args.runs} runs")


if __name__ == "__main__":
    main()
