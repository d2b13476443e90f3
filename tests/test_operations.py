"""What operators watch: /healthz (database, broker, cache, beat's heartbeat) and /metrics (Prometheus)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from approvals.models import ReviewTask
from hitlgov import health
from tests.conftest import SMALL_REFUND, wait_until


@pytest.fixture
def web():
    return Client()


def sample(text: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


# ---- /healthz

def test_healthy_when_database_broker_cache_answer_and_beat_beat_recently(db, web):
    health.record_heartbeat()

    response = web.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "cache": "ok", "beat": "ok"}}


def test_a_silent_beat_makes_it_unhealthy_saying_so(db, web, settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 30
    health.record_heartbeat(datetime.now(dt_timezone.utc) - timedelta(seconds=91))

    response = web.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["beat"] == "last heartbeat 91 s ago"
    assert response.json()["checks"]["database"] == "ok"


def test_an_unreachable_broker_makes_it_unhealthy_not_a_500(db, web, settings):
    health.record_heartbeat()
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1

    response = web.get("/healthz")

    assert response.status_code == 503
    assert response.json()["checks"]["broker"] != "ok" and response.json()["checks"]["cache"] == "ok"


@pytest.mark.worker
def test_beat_and_a_worker_keep_the_heartbeat_fresh(start_worker, web, django_db_blocker):
    from django.core.cache import cache

    cache.delete(health.HEARTBEAT_KEY)
    assert web.get("/healthz").json()["checks"]["beat"] == "no heartbeat from beat yet"

    start_worker(beat=True, HEARTBEAT_INTERVAL_SECONDS=1)

    body = wait_until(lambda: (r := web.get("/healthz")).status_code == 200 and r.json(), timeout=60,
                      message="a heartbeat from beat")
    assert body["checks"]["beat"] == "ok"


# ---- /metrics

def test_metrics_count_queues_breaches_decisions_and_executions(submit, failed, executed, web):
    submit("one")
    submit("two")
    late = submit("late")
    ReviewTask.objects.filter(proposal=late).update(due_at=timezone.now() - timedelta(minutes=1))
    failed("broken", target={"type": "order", "id": "A-1002"})
    executed("done")
    submit("small", **SMALL_REFUND)

    text = web.get("/metrics").content.decode()

    assert sample(text, "hitlgov_review_queue_depth", group="finance") == 3
    assert sample(text, "hitlgov_sla_breached_tiers", group="finance") == 1
    assert sample(text, "hitlgov_decisions_recent", outcome="review") == 5  # three waiting, two approved since
    assert sample(text, "hitlgov_decisions_recent", outcome="auto") == 1
    assert sample(text, "hitlgov_decisions_recent", outcome="block") == 0
    assert sample(text, "hitlgov_execution_errors_recent") == 1
    assert sample(text, "hitlgov_execution_seconds_count") == 2
    assert sample(text, "hitlgov_execution_seconds", quantile="0.99") >= 0


def test_metrics_ask_for_the_token_when_one_is_set(db, web, settings):
    settings.METRICS_TOKEN = "s3cret"

    assert web.get("/metrics").status_code == 401
    assert web.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert web.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200
