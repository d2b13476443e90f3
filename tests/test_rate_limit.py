"""The API rate limit holds exactly under concurrency: real HTTP requests at once, one shared count."""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest

from approvals import rate_limit
from approvals.models import RateWindow

LIMIT, CALLS = 5, 16


@pytest.fixture
def rate(settings):
    """LIMIT calls a day: a window boundary cannot fall inside a test and hand out a fresh allowance."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"integration": f"{LIMIT}/day"}}


def call(url: str, key: str) -> tuple[int, str | None]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("Retry-After")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After")


def burst(url: str, key: str, calls: int) -> list[tuple[int, str | None]]:
    """`calls` requests from as many threads, released together."""
    start = threading.Barrier(calls)
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def one():
        start.wait()
        outcome = call(url, key)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_concurrent_calls_over_the_limit_get_exactly_the_limit_through(transactional_db, live_server, make_client, rate):
    client = make_client("burst-bot", scopes=["proposals:read"])

    results = burst(f"{live_server.url}/api/v1/connectors/", client.raw_key, CALLS)

    codes = sorted(code for code, _ in results)
    assert codes == [200] * LIMIT + [429] * (CALLS - LIMIT)
    waits = [int(retry) for code, retry in results if code == 429]
    assert len(waits) == CALLS - LIMIT and all(0 < wait <= 86400 for wait in waits)
    today = rate_limit.window_start(datetime.now(timezone.utc), 86400)
    assert rate_limit.current(f"integration:{client.integration.pk}", today) == CALLS


def test_each_integration_has_its_own_count(transactional_db, live_server, make_client, rate):
    first, second = make_client("first-bot", scopes=["proposals:read"]), make_client("second-bot", scopes=["proposals:read"])
    url = f"{live_server.url}/api/v1/connectors/"

    assert [call(url, first.raw_key)[0] for _ in range(LIMIT + 1)] == [200] * LIMIT + [429]
    assert call(url, second.raw_key)[0] == 200


def test_hits_in_a_new_window_start_again_and_the_old_window_is_dropped(db, monkeypatch):
    monkeypatch.setattr(rate_limit, "_redis_cache", lambda: None)  # the database's count, whatever the cache
    old, new = datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 2, tzinfo=timezone.utc)

    assert [rate_limit.hit("integration:1", old) for _ in range(3)] == [1, 2, 3]
    assert rate_limit.hit("integration:1", new) == 1
    assert list(RateWindow.objects.values_list("window_start", "count")) == [(new, 1)]


def test_windows_align_to_their_length():
    now = datetime(2026, 11, 21, 12, 34, 56, tzinfo=timezone.utc)

    assert rate_limit.window_start(now, 60) == datetime(2026, 11, 21, 12, 34, tzinfo=timezone.utc)
    assert rate_limit.window_start(now, 86400) == datetime(2026, 11, 21, tzinfo=timezone.utc)


@pytest.mark.skipif(not os.getenv("CACHE_URL", "").startswith("redis"), reason="counts in Redis only on a Redis cache")
def test_on_redis_each_window_counts_in_its_own_key_that_expires_after_it(db):
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    key = f"test-{os.getpid()}-{start.timestamp()}"

    assert [rate_limit.hit(key, start, 60) for _ in range(3)] == [1, 2, 3]
    assert rate_limit.current(key, start) == 3 and not RateWindow.objects.exists()
    backend = rate_limit._redis_cache()
    name = backend.make_and_validate_key(f"rate:{key}:{int(start.timestamp())}")
    assert 60 < backend._cache.get_client(name).ttl(name) <= 120
