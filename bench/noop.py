"""bench/executions.py's reference task: a Celery task that only counts itself (one Redis INCR)."""

import os

import redis
from celery import shared_task

COUNTER = "bench:noop-done"


@shared_task(name="bench.noop", acks_late=True)
def noop() -> None:
    redis.Redis.from_url(os.environ["CACHE_URL"]).incr(COUNTER)
