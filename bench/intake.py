"""Intake through real HTTP beside a bare DRF endpoint, same run: `.venv/bin/python bench/intake.py`.

Starts gunicorn (2 sync workers) twice on a fresh database: once serving the product, once
serving bench/bare_urls.py (a DRF create endpoint inserting one row, same settings and
middleware). Closed-loop clients on loopback (keep-alive, one request at a time each) post for
--seconds per round; rounds alternate ours / bare so both see the same machine load. Prints
requests/s, p50 and p99 per round and the ratio. Proposals are the demo's refunds (a third run
without review and queue their execution on the broker, as in production).

--rate R switches to an open loop (issue 14's "p99 <= 50 ms at 200 req/s offered"): requests are
sent on a fixed schedule, R a second, whatever the server answers, by a pool of --clients
connections; each latency counts from the request's scheduled time, so waiting for a free
connection counts too (no coordinated omission). It prints the offered and answered rates.

SQLite by default (a fresh file); set DATABASE_URL (and CELERY_BROKER_URL, CACHE_URL) for
PostgreSQL. Options: --seconds 10 --rounds 2 --clients 8 --workers 2 --rate 200
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HITL_VAR_DIR", tempfile.mkdtemp(prefix="hitl-intake-"))
    env.update(DEBUG="false", SECRET_KEY="bench-only-secret-key-0123456789", SECURE_SSL_REDIRECT="false",
               SESSION_COOKIE_SECURE="false", CSRF_COOKIE_SECURE="false", API_RATE_LIMIT="100000000/min",
               LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT))
    return env


def prepare(env: dict[str, str]) -> str:
    """Migrate, seed the demo, and make an API key; returns the key."""
    script = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='hitlgov.settings'; django.setup()\n"
        "from django.core.management import call_command; call_command('migrate', verbosity=0)\n"
        "from approvals.demo import seed_matrix, seed_people, seed_systems\n"
        "from approvals.api_auth import create_api_key\nfrom approvals.models import Integration\n"
        "seed_systems(); seed_matrix(seed_people())\n"
        "integration, _ = Integration.objects.get_or_create(name='bench')\n"
        "print(create_api_key(integration, ['proposals:write', 'proposals:read'])[1])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(env: dict[str, str], settings_module: str, workers: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [GUNICORN, "hitlgov.wsgi", "-w", str(workers), "-b", f"127.0.0.1:{port}", "--log-level", "warning",
         "--timeout", "120", "--control-socket", str(Path(env["HITL_VAR_DIR"]) / f"gunicorn-{port}.ctl")],
        env={**env, "DJANGO_SETTINGS_MODULE": settings_module}, cwd=ROOT, start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not start")


def peak_rss_mb(process: subprocess.Popen) -> float:
    """The largest peak resident size (VmHWM) among the gunicorn master's worker processes."""
    children = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
    peaks = []
    for pid in children:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        peaks += [int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")]
    return max(peaks, default=0.0)


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


def proposal(n: int, run: str) -> dict:
    amount = ("45.00", "120.00", "1500.00")[n % 3]
    return {
        "idempotency_key": f"{run}-{n}", "agent": "refund-bot", "connector": "helpdesk", "action": "refund",
        "target": {"type": "order", "id": f"A-{1001 + n % 24}"},
        "changes": {"status": "refunded", "refund_amount": amount}, "amount": amount, "currency": "USD",
        "confidence": (0.95, 0.8, 0.6)[n % 3], "customer_impact": "low",
        "evidence": [{"title": f"Order {n}"}], "rationale": "benchmark",
    }


def load(port: int, path: str, body_for, headers: dict, seconds: float, clients: int) -> tuple[list[float], int]:
    """Closed loop: each client posts, waits for the answer, posts again. Returns latencies and errors."""
    counter = itertools.count()
    deadline = time.monotonic() + seconds
    return _drive(port, path, body_for, headers, clients,
                  lambda: (next(counter), None) if time.monotonic() < deadline else None)


def offered(port: int, path: str, body_for, headers: dict, seconds: float, clients: int,
            rate: float) -> tuple[list[float], int]:
    """Open loop: request n is due at start + n / rate. A client takes the next due request, waits for its
    time, sends it; its latency runs from the due time. Requests due after `seconds` are not sent."""
    counter = itertools.count()
    start = time.perf_counter() + 0.05

    def schedule() -> tuple[int, float] | None:
        n = next(counter)
        due = start + n / rate
        return (n, due) if due < start + seconds else None

    return _drive(port, path, body_for, headers, clients, schedule)


def _drive(port: int, path: str, body_for, headers: dict, clients: int, schedule) -> tuple[list[float], int]:
    """`clients` connections, each sending the request `schedule()` names next: (n, due time, or None for
    at once), until it says None. A latency runs from the due time (or the send). Returns latencies and errors."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine, bad = [], 0
        while (slot := schedule()) is not None:
            n, due = slot
            data = json.dumps(body_for(n)).encode()
            if due is None:
                due = time.perf_counter()
            else:
                time.sleep(max(0.0, due - time.perf_counter()))
            conn.request("POST", path, body=data, headers={"Content-Type": "application/json", **headers})
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - due)
            if response.status >= 300:
                bad += 1
                if bad == 1:
                    print(f"    {path}: HTTP {response.status}", file=sys.stderr)
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


def summary(latencies: list[float], seconds: float) -> tuple[float, float, float]:
    cuts = statistics.quantiles(latencies, n=100)
    return len(latencies) / seconds, cuts[49] * 1000, cuts[98] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0, help="requests a second offered (open loop); 0: closed loop")
    args = parser.parse_args()
    env = server_env()
    key = prepare(env)
    database = "PostgreSQL" if env.get("DATABASE_URL", "").startswith("postgres") else "SQLite"
    loop = f"{args.rate:.0f} req/s offered by {args.clients} connections" if args.rate else f"{args.clients} clients"
    print(f"intake on {database}, gunicorn {args.workers} workers, {loop}, {args.seconds:.0f} s rounds;"
          f" load average {os.getloadavg()[0]:.1f}")
    ours, bare = start(env, "hitlgov.settings", args.workers), start(env, "bench.bare_settings", args.workers)
    try:
        for run, (name, (_, port), path, body_for, headers) in enumerate(itertools.islice(itertools.cycle([
            ("ours", ours, "/api/v1/proposals/", None, {"Authorization": f"Bearer {key}"}),
            ("bare", bare, "/bare/", None, {}),
        ]), 2 * args.rounds + 2)):
            warm = run < 2  # one short round each first: workers compile the matrix, open connections
            if name == "ours":
                body_for = (lambda tag: lambda n: proposal(n, tag))(f"r{run}")
            else:
                body_for = (lambda tag: lambda n: {"key": f"{tag}-{n}", "window_start": "2026-01-01T00:00:00Z"})(f"r{run}")
            seconds = 2 if warm else args.seconds
            if args.rate and not warm:
                started = time.perf_counter()
                latencies, errors = offered(port, path, body_for, headers, seconds, args.clients, args.rate)
                seconds = time.perf_counter() - started  # answered per second, including the backlog's drain
            else:
                latencies, errors = load(port, path, body_for, headers, seconds, args.clients)
            if warm:
                continue
            rate, p50, p99 = summary(latencies, seconds)
            print(f"  {name}: {rate:7.1f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   errors {errors}")
        print(f"  peak resident memory of a web worker: ours {peak_rss_mb(ours[0]):.0f} MB,"
              f" bare {peak_rss_mb(bare[0]):.0f} MB")
    finally:
        stop(ours[0])
        stop(bare[0])


if __name__ == "__main__":
    main()
