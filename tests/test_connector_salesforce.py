"""Contract tests of the Salesforce adapter against a local server speaking the sObject REST API."""

from __future__ import annotations

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
from connectors.adapters.salesforce import SalesforceAdapter, http_date
from tests.connector_fakes import TIMEOUT, body_of, hung_vendor, sent, serve

TOKEN = "00Dxx0000000001!AQ4AQFakeAccessToken"
PATH = "/services/data/v60.0/sobjects/Opportunity/006xx000001"
TARGET = Target("Opportunity", "006xx000001")
OPP = {
    "attributes": {"type": "Opportunity", "url": PATH},
    "Id": "006xx000001",
    "Name": "Acme renewal",
    "StageName": "Prospecting",
    "Amount": 50000.0,
    "OwnerId": "005xx0000001",
    "LastModifiedDate": "2024-05-01T12:34:56.000+0000",
}
UPDATED = {**OPP, "StageName": "Closed Won", "LastModifiedDate": "2024-05-02T08:00:00.000+0000"}


def sf(httpserver: HTTPServer) -> SalesforceAdapter:
    config = {"instance_url": httpserver.url_for("/"), "api_version": "v60.0", "timeout_seconds": TIMEOUT}
    return SalesforceAdapter(config, {"access_token": TOKEN})


def sf_error(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, object]]:
    return [{"message": message, "errorCode": code, "fields": fields or []}]


def test_registered_with_actions() -> None:
    assert adapter_class("salesforce") is SalesforceAdapter
    assert set(SalesforceAdapter.actions) == {"update_opportunity", "update_account", "update_contact", "update"}


def test_read_drops_attributes_and_sends_bearer(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, OPP)
    record = sf(httpserver).read(TARGET)
    assert "attributes" not in record and record["StageName"] == "Prospecting"
    assert sent(httpserver, "GET")[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_preview_flags_sensitive_fields(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, OPP)
    preview = sf(httpserver).preview("update_opportunity", TARGET, {"StageName": "Closed Won", "Amount": 60000.0})
    assert [c.as_dict() for c in preview.changes] == [
        {"field": "StageName", "before": "Prospecting", "after": "Closed Won", "sensitive": False},
        {"field": "Amount", "before": 50000.0, "after": 60000.0, "sensitive": True},
    ]


def test_action_names_the_sobject_when_target_type_is_empty(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", "/services/data/v60.0/sobjects/Account/001xx", {"Id": "001xx", "Name": "Acme"})
    preview = sf(httpserver).preview("update_account", Target("", "001xx"), {"Name": "Acme Corp"})
    assert preview.before == {"Name": "Acme"}
    with pytest.raises(PermanentError, match="target type"):
        sf(httpserver).preview("update", Target("", "001xx"), {"Name": "x"})


def test_target_type_wins_over_action(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", "/services/data/v60.0/sobjects/Lead/00Qxx", {"Id": "00Qxx", "Phone": "1"})
    preview = sf(httpserver).preview("update_contact", Target("Lead", "00Qxx"), {"Phone": "2"})
    assert preview.changes[0].sensitive


def test_execute_is_a_conditional_patch_then_reread(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, OPP, ordered=True)
    serve(httpserver, "PATCH", PATH, None, status=204, ordered=True)
    serve(httpserver, "GET", PATH, UPDATED, ordered=True)
    result = sf(httpserver).execute("update_opportunity", TARGET, {"StageName": "Closed Won"}, "key-1")
    patch = sent(httpserver, "PATCH")[0]
    assert body_of(patch) == {"StageName": "Closed Won"}
    assert patch.headers["If-Unmodified-Since"] == "Wed, 01 May 2024 12:34:56 GMT"
    assert patch.headers["Authorization"] == f"Bearer {TOKEN}"
    assert result.after["StageName"] == "Closed Won" and "attributes" not in result.after
    assert result.request == {"method": "PATCH", "path": PATH, "fields": ["StageName"]}
    assert result.response == {"status": 204}
    httpserver.check_assertions()


def test_concurrent_change_gives_412_write_conflict(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, OPP)
    serve(httpserver, "PATCH", PATH, sf_error("PRECONDITION_FAILED", "The record was modified"), status=412)
    with pytest.raises(WriteConflict, match="PRECONDITION_FAILED: The record was modified") as info:
        sf(httpserver).execute("update_opportunity", TARGET, {"StageName": "Closed Won"}, "k")
    assert info.value.status == 412


def test_compensate_patches_before_values(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, UPDATED)
    serve(httpserver, "PATCH", PATH, None, status=204)
    sf(httpserver).compensate("update_opportunity", TARGET, {"StageName": "Prospecting"})
    assert body_of(sent(httpserver, "PATCH")[0]) == {"StageName": "Prospecting"}


def test_validation_error_surfaces_message_code_and_fields(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, OPP)
    error = sf_error("STRING_TOO_LONG", "Name: data value too large", ["Name"])
    serve(httpserver, "PATCH", PATH, error, status=400)
    with pytest.raises(PermanentError, match=r"STRING_TOO_LONG: Name: data value too large \(fields: Name\)"):
        sf(httpserver).execute("update", TARGET, {"Name": "x" * 300}, "k")


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (401, sf_error("INVALID_SESSION_ID", "Session expired or invalid"), AuthError),
        (404, sf_error("NOT_FOUND", "The requested resource does not exist"), RecordNotFound),
        (500, sf_error("UNKNOWN_EXCEPTION", "An unexpected error occurred"), TransientError),
        (403, sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), TransientError),
    ],
)
def test_error_statuses(httpserver: HTTPServer, status: int, body: object, cls: type) -> None:
    serve(httpserver, "GET", PATH, body, status=status)
    with pytest.raises(cls) as info:
        sf(httpserver).read(TARGET)
    assert type(info.value) is cls
    assert body[0]["errorCode"] in str(info.value)  # type: ignore[index]
    assert TOKEN not in str(info.value)


def test_429_carries_retry_after(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, sf_error("REQUEST_LIMIT_EXCEEDED", "slow down"), status=429,
          headers={"Retry-After": "20"})
    with pytest.raises(TransientError) as info:
        sf(httpserver).read(TARGET)
    assert info.value.retry_after == 20.0


def test_timeout_is_transient(httpserver: HTTPServer) -> None:
    with hung_vendor(httpserver, PATH, OPP), pytest.raises(TransientError, match="timed out"):
        sf(httpserver).read(TARGET)


def test_missing_token_is_an_auth_error() -> None:
    with pytest.raises(AuthError, match="access_token"):
        SalesforceAdapter({"instance_url": "https://x.my.salesforce.com"}, {}).read(TARGET)


def test_health_gets_limits(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", "/services/data/v60.0/limits", {"DailyApiRequests": {"Max": 15000, "Remaining": 14998}})
    assert sf(httpserver).health().ok
    assert sent(httpserver, "GET")[0].headers["Authorization"] == f"Bearer {TOKEN}"
    httpserver.clear()
    serve(httpserver, "GET", "/services/data/v60.0/limits", sf_error("INVALID_SESSION_ID", "expired"), status=401)
    health = sf(httpserver).health()
    assert not health.ok and "INVALID_SESSION_ID" in health.detail


def test_http_date_formats() -> None:
    assert http_date("2024-05-01T12:34:56.000+0000") == "Wed, 01 May 2024 12:34:56 GMT"
    assert http_date("2024-05-01T14:34:56.000+02:00") == "Wed, 01 May 2024 12:34:56 GMT"
    assert http_date(None) is None and http_date("yesterday") is None
