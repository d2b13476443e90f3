"""A real broker outage for the test process (the web side), while no worker is running.

- Filesystem broker: the folder messages are written to is moved away, so the producer's
  write fails (FileNotFoundError), as when the broker's volume is gone.
- Redis (the scale-out run): the test process's producer is pointed at a local port nothing
  listens on, so connecting is refused (kombu OperationalError after its retries). The Redis
  server is shared, so it is not stopped.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings

from hitlgov.celery import app as celery_app


@contextmanager
def broker_down() -> Iterator[None]:
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        inbox, away = settings.BROKER_DIR / "in", settings.BROKER_DIR / "in-down"
        inbox.rename(away)
        try:
            yield
        finally:
            away.rename(inbox)
        return
    previous = celery_app.conf.broker_write_url
    celery_app.conf.broker_write_url = f"redis://127.0.0.1:{_closed_port()}/0"
    _drop_connections()
    try:
        yield
    finally:
        celery_app.conf.broker_write_url = previous
        _drop_connections()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # free once the probe closes


def _drop_connections() -> None:
    """Celery keeps producer connections in pools; new publishes must connect afresh."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
