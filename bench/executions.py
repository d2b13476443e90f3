"""Executions per second beside a Celery no-op, same run: `.venv/bin/python bench/executions.py`.

Needs PostgreSQL and Redis: DATABASE_URL (an empty database: it is migrated and filled),
CELERY_BROKER_URL and CACHE_URL. For each worker count (--workers 1,2: one Celery worker with
that many prefork processes; with --threads N, each process also runs N tasks at once in threads,
Celery's threads pool, which is one process) it measures:
  executions   --proposals approved (automatically) proposals whose execute messages are sent at
               once; time until every one is executed on the sandbox connector.
  no-op        as many `bench.noop` tasks (bench/noop.py) through the same worker and broker.
  start delay  proposals submitted one by one at --rate per second while the worker runs: the delay
               from the approval's commit to the execution's start (p50, p99).
and the worker processes' peak resident memory.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hitlgov.settings")
os.environ.setdefault("DEBUG", "True")
os.environ["CELERY_TASK_ALWAYS_EAGER"] = "false"

import django  # noqa: E402

django.setup()

import redis  # noqa: E402
from django.core.management import call_command  # noqa: E402

from approvals import lifecycle, services  # noqa: E402
from approvals.demo import seed_matrix, seed_people, seed_systems  # noqa: E402
from approvals.models import Integration, Proposal, Status  # noqa: E402
from bench.noop import COUNTER  # noqa: E402
from connectors.models import Connector, Execution, SandboxRecord  # noqa: E402
from hitlgov.celery import app  # noqa: E402

# Its own queue and worker name: a test suite's workers on the same Redis database neither take the
# benchmark's messages nor answer its pings (and its purge leaves their queue alone).
QUEUE = "bench"
app.conf.task_default_queue = QUEUE


def small_refund(n: int, tag: str) -> dict:
    """A refund of its own order (made here): refunding one order twice would find it changed (stale)."""
    from decimal import Decimal

    record = f"B-{tag}-{n}"
    SandboxRecord.objects.get_or_create(
        connector=Connector.objects.get(slug="helpdesk"), type="order", record_id=record,
        defaults={"data": {"status": "delivered", "total": "220", "refund_amount": "0.00"}},
    )
    return {
        "idempotency_key": f"{tag}-{n}", "agent": "refund-bot", "connector": "helpdesk", "action": "refund",
        "target": {"type": "order", "id": record}, "changes": {"status": "refunded", "refund_amount": "45.00"},
        "amount": Decimal("45.00"), "currency": "USD", "confidence": 0.95, "customer_impact": "low",
        "evidence": [{"title": "bench"}], "rationale": "benchmark", "context": {},
    }


def approved(count: int, tag: str, integration: Integration) -> list[str]:
    """`count` automatically approved proposals whose execution is not sent (the benchmark sends it)."""
    original = lifecycle.enqueue_execution
    lifecycle.enqueue_execution = lambda proposal, **kwargs: None
    try:
        ids = [str(services.submit_proposal(integration, small_refund(n, tag))[0].pk) for n in range(count)]
    finally:
        lifecycle.enqueue_execution = original
    assert Proposal.objects.filter(pk__in=ids, status=Status.APPROVED).count() == count
    return ids


def start_worker(processes: int, threads: int, name: str) -> subprocess.Popen:
    # Celery's threads pool is one process: two processes of N threads are two workers.
    pool = [f"--concurrency={processes}"] if not threads else ["--pool=threads", f"--concurrency={threads}"]
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "hitlgov", "worker", *pool, "-I", "bench.noop", "-Q", QUEUE, "-n", f"{name}@%h",
         "--loglevel=warning", "--without-gossip", "--without-mingle", "--without-heartbeat"],
        # As in production: DEBUG off, so no query is logged in memory (the no-op runs no query to log).
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "DEBUG": "false", "SECRET_KEY": "bench-only-secret-key-0123456789"},
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if app.control.ping(timeout=1, destination=[f"{name}@{socket.gethostname()}"]):
            return process
    raise RuntimeError("worker did not answer a ping")


def peak_rss_mb(process: subprocess.Popen) -> float:
    """The largest peak resident size among the worker's processes (its pool children included)."""
    pids = [process.pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-g", str(process.pid)], capture_output=True, text=True).stdout.split()]
    peaks = []
    for pid in set(pids):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        except FileNotFoundError:
            pass
    return max(peaks, default=0.0)


def wait_for(done, count: int, timeout: float = 600) -> float:
    start = time.perf_counter()
    while done() < count:
        if time.perf_counter() - start > timeout:
            raise TimeoutError(f"{done()} of {count} after {timeout} s")
        time.sleep(0.02)
    return time.perf_counter() - start


def run(processes: int, threads: int, count: int, rate: float, integration: Integration) -> None:
    r = redis.Redis.from_url(os.environ["CACHE_URL"])
    tag = f"{processes}t{threads}-{int(time.time())}"  # a fresh set of orders each run, in a database kept between runs
    ids = approved(count, f"x{tag}", integration)
    workers = [start_worker(processes if not threads else 1, threads, f"bench-{n}") for n in range(processes if threads else 1)]
    worker = workers[0]
    try:
        for proposal_id in ids:
            app.send_task("approvals.tasks.execute_proposal", [proposal_id])
        took = wait_for(lambda: Proposal.objects.filter(pk__in=ids, status=Status.EXECUTED).count(), count)
        r.delete(COUNTER)
        for _ in range(count):
            app.send_task("bench.noop")
        noop_took = wait_for(lambda: int(r.get(COUNTER) or 0), count)
        delays = start_delays(max(20, int(rate * 5)), rate, f"d{tag}", integration)
        cuts = statistics.quantiles(delays, n=100)
        label = f"{processes} process(es)" + (f" x {threads} threads" if threads else "")
        print(f"  {label}: executions {count / took:7.1f}/s   no-op {count / noop_took:7.1f}/s"
              f"   ratio {took and noop_took / took:.2f}   approval-to-start p50 {cuts[49]:.0f} ms p99 {cuts[98]:.0f} ms"
              f"   worker peak RSS {max(peak_rss_mb(w) for w in workers):.0f} MB")
    finally:
        for w in workers:
            os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            w.wait(timeout=60)


def start_delays(count: int, rate: float, tag: str, integration: Integration) -> list[float]:
    """Submit automatically approved proposals at `rate`/s; the delay from approval to execution start, in ms."""
    ids = []
    for n in range(count):
        t0 = time.perf_counter()
        ids.append(services.submit_proposal(integration, small_refund(n, tag))[0].pk)
        time.sleep(max(0.0, 1 / rate - (time.perf_counter() - t0)))
    wait_for(lambda: Execution.objects.filter(proposal_id__in=ids).count(), count)
    approved_at = dict(Proposal.history.filter(id__in=ids, status=Status.APPROVED).values_list("id", "history_date"))
    started = dict(Execution.objects.filter(proposal_id__in=ids).values_list("proposal_id", "started_at"))
    return [(started[i] - approved_at[i]).total_seconds() * 1000 for i in ids]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--proposals", type=int, default=300)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rate", type=float, default=10)
    parser.add_argument("--threads", default="0", help="threads per worker process, e.g. 0,8 (0: prefork)")
    args = parser.parse_args()
    if not os.getenv("DATABASE_URL", "").startswith("postgres") or not os.getenv("CELERY_BROKER_URL", "").startswith("redis"):
        sys.exit("set DATABASE_URL (PostgreSQL), CELERY_BROKER_URL and CACHE_URL (Redis)")
    call_command("migrate", verbosity=0)
    seed_systems()
    seed_matrix(seed_people())
    integration, _ = Integration.objects.get_or_create(name="bench")
    app.control.purge()
    print(f"executions on PostgreSQL + Redis, {args.proposals} per round; load average {os.getloadavg()[0]:.1f}")
    for threads in (int(t) for t in args.threads.split(",")):
        for processes in (int(w) for w in args.workers.split(",")):
            run(processes, threads, args.proposals, args.rate, integration)


if __name__ == "__main__":
    main()
