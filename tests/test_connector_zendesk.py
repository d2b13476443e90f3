"""Contract tests of the Zendesk adapter against a local server speaking the Tickets API."""

from __future__ import annotations

import base64

import pytest
from pytest_httpserver import HTTPServer

from connectors.adapters.base import (
    AuthError,
    PermanentError,
    RecordNotFound,
    Target,
    TransientError,
    WriteConflict,
    adapter_class,
)
from connectors.adapters.zendesk import MARK, ZendeskAdapter
from tests.connector_fakes import TIMEOUT, body_of, hung_vendor, sent, serve

EMAIL, API_TOKEN = "agent@acme.test", "zd-api-token-6wiIBWbGkBMo1mRDMuVwkw1E"
PATH = "/api/v2/tickets/35436.json"
AUDITS = "/api/v2/tickets/35436/audits.json"
TARGET = Target("ticket", "35436")
STAMP = "2024-05-01T12:34:56Z"
TICKET = {
    "id": 35436,
    "subject": "Help, my printer is on fire!",
    "status": "open",
    "priority": "high",
    "assignee_id": 235323,
    "requester_id": 20978392,
    "updated_at": STAMP,
}


def zd(httpserver: HTTPServer) -> ZendeskAdapter:
    config = {"subdomain_url": httpserver.url_for("/"), "timeout_seconds": TIMEOUT}
    return ZendeskAdapter(config, {"email": EMAIL, "api_token": API_TOKEN})


def test_registered_with_actions() -> None:
    assert adapter_class("zendesk") is ZendeskAdapter
    assert ZendeskAdapter.actions["public_reply"] == "send"


def test_read_unwraps_ticket_with_api_token_basic_auth(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"ticket": TICKET})
    assert zd(httpserver).read(TARGET) == TICKET
    expected = "Basic " + base64.b64encode(f"{EMAIL}/token:{API_TOKEN}".encode()).decode()
    assert sent(httpserver, "GET")[0].headers["Authorization"] == expected


def test_preview_status_and_sensitive_assignee(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"ticket": TICKET})
    preview = zd(httpserver).preview("update", TARGET, {"status": "pending", "assignee_id": 1, "priority": "high"})
    assert [c.as_dict() for c in preview.changes] == [
        {"field": "status", "before": "open", "after": "pending", "sensitive": False},
        {"field": "assignee_id", "before": 235323, "after": 1, "sensitive": True},
    ]


def test_empty_reply_is_refused_before_any_call(httpserver: HTTPServer) -> None:
    with pytest.raises(PermanentError, match="body"):
        zd(httpserver).preview("public_reply", TARGET, {"body": "  "})
    with pytest.raises(PermanentError, match="status"):
        zd(httpserver).execute("set_status", TARGET, {}, "k")
    assert httpserver.log == []


def test_set_status_is_a_safe_update_with_idempotency_key(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"ticket": TICKET})
    serve(httpserver, "PUT", PATH, {"ticket": {**TICKET, "status": "solved"}, "audit": {"id": 1}})
    result = zd(httpserver).execute("set_status", TARGET, {"status": "solved"}, "key-1")
    put = sent(httpserver, "PUT")[0]
    assert body_of(put) == {"ticket": {
        "status": "solved", "safe_update": True, "updated_stamp": STAMP, "metadata": {"custom": {MARK: "key-1"}},
    }}
    assert put.headers["Idempotency-Key"] == "key-1"
    assert result.after["status"] == "solved"
    assert result.request["path"] == PATH and result.response == {"status": 200, "keys": ["audit", "ticket"]}


def test_public_reply_checks_audits_then_comments_publicly(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", AUDITS, {"audits": [{"id": 9, "metadata": {"custom": {}, "system": {}}}]})
    serve(httpserver, "GET", PATH, {"ticket": TICKET})
    serve(httpserver, "PUT", PATH, {"ticket": TICKET})
    zd(httpserver).execute("public_reply", TARGET, {"body": "We have sent a technician."}, "key-2")
    ticket = body_of(sent(httpserver, "PUT")[0])["ticket"]
    assert ticket["comment"] == {"body": "We have sent a technician.", "public": True}
    assert ticket["safe_update"] is True and ticket["updated_stamp"] == STAMP
    assert sent(httpserver, "GET")[0].args["sort_order"] == "desc"


def test_retried_reply_already_in_audits_is_not_sent_twice(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", AUDITS, {"audits": [{"id": 9, "metadata": {"custom": {MARK: "key-2"}}}]})
    serve(httpserver, "GET", PATH, {"ticket": TICKET})
    result = zd(httpserver).execute("public_reply", TARGET, {"body": "We have sent a technician."}, "key-2")
    assert sent(httpserver, "PUT") == []
    assert result.response == {"replayed": True}


def test_internal_note_is_private(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", AUDITS, {"audits": []})
    serve(httpserver, "GET", PATH, {"ticket": TICKET})
    serve(httpserver, "PUT", PATH, {"ticket": TICKET})
    zd(httpserver).execute("internal_note", TARGET, {"body": "Customer is on the enterprise plan."}, "key-3")
    assert body_of(sent(httpserver, "PUT")[0])["ticket"]["comment"]["public"] is False


def test_safe_update_conflict_is_write_conflict(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"ticket": TICKET})
    conflict = {"error": "UpdateConflict", "description": "Safe Update prevented the update due to outdated data."}
    serve(httpserver, "PUT", PATH, conflict, status=409)
    with pytest.raises(WriteConflict, match="UpdateConflict: Safe Update prevented"):
        zd(httpserver).execute("set_status", TARGET, {"status": "solved"}, "k")


def test_compensate_puts_status_back(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"ticket": {**TICKET, "status": "solved"}})
    serve(httpserver, "PUT", PATH, {"ticket": TICKET})
    result = zd(httpserver).compensate("set_status", TARGET, {"status": "open"})
    assert body_of(sent(httpserver, "PUT")[0])["ticket"]["status"] == "open"
    assert "Idempotency-Key" not in sent(httpserver, "PUT")[0].headers
    assert result.after["status"] == "open"


@pytest.mark.parametrize(
    ("action", "message"), [("public_reply", "cannot be unsent"), ("internal_note", "cannot be removed")]
)
def test_comments_cannot_be_compensated(httpserver: HTTPServer, action: str, message: str) -> None:
    with pytest.raises(PermanentError, match=message):
        zd(httpserver).compensate(action, TARGET, {"body": None})
    assert httpserver.log == []


def test_validation_error_surfaces_details(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"ticket": TICKET})
    invalid = {"error": "RecordInvalid", "description": "Record validation errors",
               "details": {"status": [{"description": "Status: closed prevents ticket update"}]}}
    serve(httpserver, "PUT", PATH, invalid, status=422)
    with pytest.raises(PermanentError, match="RecordInvalid: Record validation errors .*closed prevents"):
        zd(httpserver).execute("set_status", TARGET, {"status": "open"}, "k")


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (401, {"error": "Couldn't authenticate you"}, AuthError),
        (403, {"error": "Forbidden", "description": "You do not have access to this page."}, AuthError),
        (404, {"error": "RecordNotFound", "description": "Not found"}, RecordNotFound),
        (503, {"error": "ServiceUnavailable"}, TransientError),
    ],
)
def test_error_statuses(httpserver: HTTPServer, status: int, body: dict[str, str], cls: type) -> None:
    serve(httpserver, "GET", PATH, body, status=status)
    with pytest.raises(cls) as info:
        zd(httpserver).read(TARGET)
    assert type(info.value) is cls and body["error"] in str(info.value)
    assert API_TOKEN not in str(info.value)


def test_429_carries_retry_after(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"error": "TooManyRequests"}, status=429, headers={"Retry-After": "93"})
    with pytest.raises(TransientError) as info:
        zd(httpserver).read(TARGET)
    assert info.value.retry_after == 93.0


def test_timeout_is_transient(httpserver: HTTPServer) -> None:
    with hung_vendor(httpserver, PATH, {"ticket": TICKET}), pytest.raises(TransientError, match="timed out"):
        zd(httpserver).read(TARGET)


def test_health_gets_current_user(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", "/api/v2/users/me.json", {"user": {"id": 1, "email": EMAIL, "role": "agent"}})
    assert zd(httpserver).health().ok
    httpserver.clear()
    serve(httpserver, "GET", "/api/v2/users/me.json", {"error": "Couldn't authenticate you"}, status=401)
    health = zd(httpserver).health()
    assert not health.ok and "authenticate" in health.detail
