"""Shared builders for the connector contract tests (a plain module: the lead owns conftest.py).

The local HTTP server plays the vendor: these helpers serve its documented shapes, hold answers
back for timeout tests, and read back exactly what an adapter sent.
"""

from __future__ import annotations

import json
import smtplib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

from django.core.mail.backends.base import BaseEmailBackend

from connectors.adapters.base import register
from connectors.adapters.sandbox import SandboxAdapter
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import wait_until

TIMEOUT = 0.5  # configured timeout_seconds in the tests
HUNG_AT_MOST = 10.0  # a hung vendor answers by then even if the test never lets it: a broken adapter must not hang the suite


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, content_type="application/json")


def serve(httpserver: HTTPServer, method: str, path: str, body: Any = None, status: int = 200,
          headers: dict[str, str] | None = None, ordered: bool = False) -> None:
    """Answer `method path` with a JSON body (or an empty one when body is None)."""
    expect = httpserver.expect_ordered_request if ordered else httpserver.expect_request
    handler = expect(path, method=method)
    if body is None:
        handler.respond_with_response(Response(b"", status=status, headers=headers))
    else:
        handler.respond_with_response(json_response(body, status, headers))


@contextmanager
def hung_vendor(httpserver: HTTPServer, path: str, body: Any) -> Iterator[None]:
    """A vendor that answers `path` only once the block is over, so always after the caller's timeout.

    No fixed delay: the answer is held until the test is done with the caller, however slow the
    machine. The session's server handles one request at a time, so on the way out we let it
    answer and wait until it has logged the request: otherwise it would land in the next test's log.
    """
    called, release = threading.Event(), threading.Event()
    logged_before = len(httpserver.log)

    def handle(request: Request) -> Response:
        called.set()
        release.wait(HUNG_AT_MOST)
        return json_response(body)

    httpserver.expect_request(path).respond_with_handler(handle)
    try:
        yield
    finally:
        release.set()
        if called.is_set():
            wait_until(lambda: len(httpserver.log) > logged_before, timeout=HUNG_AT_MOST, interval=0.01,
                       message="the hung vendor's request to be logged")


def sent(httpserver: HTTPServer, method: str) -> list[Request]:
    """The requests the adapter sent with this method, in order."""
    return [request for request, _ in httpserver.log if request.method == method]


def body_of(request: Request) -> Any:
    return json.loads(request.get_data())


def http_date_in(seconds: int) -> str:
    return format_datetime(datetime.now(timezone.utc) + timedelta(seconds=seconds), usegmt=True)


class FailingEmailBackend(BaseEmailBackend):
    """An email backend whose SMTP server fails in the way the test sets in `error`."""

    error: Exception = smtplib.SMTPServerDisconnected("connection unexpectedly closed")

    def send_messages(self, email_messages: Any) -> int:
        raise self.error


@register
class SlowSandboxAdapter(SandboxAdapter):
    """A sandbox whose answer comes late after the write is applied (config `response_delay_seconds`):
    a worker can be killed between a landed write and its answer. Workers load it with
    CONNECTOR_PLUGINS=tests.connector_fakes."""

    kind = "slow-sandbox"
    in_database = False  # a vendor's system: its write lands before, and apart from, the outcome's transaction

    def execute(self, action, target, changes, idempotency_key):
        result = super().execute(action, target, changes, idempotency_key)
        time.sleep(float(self.config.get("response_delay_seconds", 0)))  # models the vendor's slowness itself
        return result
