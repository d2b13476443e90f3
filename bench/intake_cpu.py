"""CPU per submission, without HTTP, beside the bare endpoint's: `.venv/bin/python bench/intake_cpu.py`.

Each side runs in its own process on a fresh database (the demo seeded, an API key made), through
the Django test client: --warm-up requests first (the matrix compiles, caches fill), then
--requests timed with `time.process_time`, so the figure is this process's CPU, not the machine's
load. Rounds alternate ours / bare. The demo's refunds as in bench/intake.py (a third approved
automatically). SQLite by default; set DATABASE_URL (CACHE_URL, CELERY_BROKER_URL) for PostgreSQL.
--profile prints ours' cProfile instead (CPU time, by own time, top 30); with PROFILE_OUT=file it also
stores the whole profile there for pstats.
Options: --requests 200 --warm-up 30 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(side: str, requests: int, warm_up: int, profile: bool) -> None:
    # As bench/intake.py's servers run: DEBUG off, as in production (with DEBUG on, Django keeps every
    # statement's text with its values, which cost ours a tenth of its CPU and the bare endpoint little).
    os.environ.update(HITL_VAR_DIR=tempfile.mkdtemp(prefix="hitl-cpu-"), DEBUG="false", API_RATE_LIMIT="100000000/min",
                      SECRET_KEY="bench-only-secret-key-0123456789", SECURE_SSL_REDIRECT="false",
                      LOG_LEVEL="WARNING", CELERY_TASK_ALWAYS_EAGER="false",
                      DJANGO_SETTINGS_MODULE="bench.bare_settings" if side == "bare" else "hitlgov.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    import time

    from django.core.management import call_command
    from django.test import Client

    from approvals.api_auth import create_api_key
    from approvals.demo import seed_matrix, seed_people, seed_systems
    from approvals.models import Integration
    from bench.intake import proposal

    call_command("migrate", verbosity=0)
    seed_systems()
    seed_matrix(seed_people())
    key = create_api_key(Integration.objects.create(name="cpu"), ["proposals:write", "proposals:read"])[1]
    client = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {key}")
    path, body = ("/bare/", lambda n: {"key": f"cpu-{n}", "window_start": "2026-01-01T00:00:00Z", "count": 1}) \
        if side == "bare" else ("/api/v1/proposals/", lambda n: proposal(n, "cpu"))

    def post(n: int) -> None:
        response = client.post(path, data=json.dumps(body(n)), content_type="application/json")
        assert response.status_code == 201, response.content

    for n in range(warm_up):
        post(n)
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile(time.process_time)  # CPU, not the loaded machine's waits
        profiler.runcall(lambda: [post(n) for n in range(warm_up, warm_up + requests)])
        if os.environ.get("PROFILE_OUT"):  # the whole profile, for pstats' callers and callees
            profiler.dump_stats(os.environ["PROFILE_OUT"])
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
        return
    start = time.process_time()
    for n in range(warm_up, warm_up + requests):
        post(n)
    print(json.dumps({"ms": (time.process_time() - start) * 1000 / requests}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warm-up", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--side", choices=["ours", "bare"], help=argparse.SUPPRESS)  # one measuring process
    args = parser.parse_args()
    if args.side or args.profile:
        child(args.side or "ours", args.requests, args.warm_up, args.profile)
        return
    for round_ in range(1, args.rounds + 1):
        figures = {}
        for side in ("ours", "bare"):
            done = subprocess.run([sys.executable, __file__, "--side", side, "--requests", str(args.requests),
                                   "--warm-up", str(args.warm_up)], capture_output=True, text=True, check=True, cwd=ROOT)
            figures[side] = json.loads(done.stdout.strip().splitlines()[-1])["ms"]
        print(f"round {round_}: ours {figures['ours']:.1f} ms CPU per submission, bare {figures['bare']:.1f} ms, "
              f"ratio {figures['bare'] / figures['ours']:.2f}x")


if __name__ == "__main__":
    main()
