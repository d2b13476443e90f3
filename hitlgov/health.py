"""`/healthz`: whether this web process can do its work: database, broker, cache, and beat's heartbeat.

200 with every check "ok", else 503 naming what failed; nothing else is said (no versions, no
hosts), so it can face a load balancer. Beat proves itself alive through a periodic task that
a worker runs (`hitlgov.heartbeat`): a fresh heartbeat means beat, the broker and a worker work.
"""

from __future__ import annotations

from datetime import datetime, timezone as dt_timezone

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse

HEARTBEAT_KEY = "hitlgov:beat-heartbeat"


def beat_heartbeat_limit() -> float:
    """Seconds without a heartbeat before beat (or every worker) counts as down: three intervals missed."""
    return 3 * settings.HEARTBEAT_INTERVAL_SECONDS


def record_heartbeat(now: datetime | None = None) -> None:
    cache.set(HEARTBEAT_KEY, (now or datetime.now(dt_timezone.utc)).timestamp(), timeout=None)


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def check_broker() -> str:
    from hitlgov.celery import app

    with app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


def check_cache() -> str:
    cache.set("hitlgov:health-probe", 1, timeout=60)
    return "ok" if cache.get("hitlgov:health-probe") == 1 else "cache did not return what was stored"


def check_beat(now: datetime | None = None) -> str:
    beat = cache.get(HEARTBEAT_KEY)
    if beat is None:
        return "no heartbeat from beat yet"
    age = (now or datetime.now(dt_timezone.utc)).timestamp() - beat
    return "ok" if age <= beat_heartbeat_limit() else f"last heartbeat {age:.0f} s ago"


CHECKS = {"database": check_database, "broker": check_broker, "cache": check_cache, "beat": check_beat}


def healthz(request: HttpRequest) -> JsonResponse:
    results = {}
    for name, check in CHECKS.items():
        try:
            results[name] = check()
        except Exception as exc:  # a check that cannot run is a failed check, never a 500
            results[name] = f"{type(exc).__name__}"
    healthy = all(result == "ok" for result in results.values())
    return JsonResponse({"status": "ok" if healthy else "failing", "checks": results}, status=200 if healthy else 503)
