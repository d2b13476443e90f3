"""Contract tests of the ServiceNow adapter against a local server speaking the Table API."""

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
from connectors.adapters.servicenow import ServiceNowAdapter
from tests.connector_fakes import TIMEOUT, body_of, hung_vendor, sent, serve

USER, PASSWORD, TOKEN = "hitl.integration", "sn-password-Xq83!kd92", "sn-oauth-token-abcdef123456"
SYS_ID = "9d385017c611228701d22104cc95c371"
PATH = f"/api/now/table/incident/{SYS_ID}"
TARGET = Target("incident", SYS_ID)
INCIDENT = {
    "sys_id": SYS_ID,
    "number": "INC0000003",
    "state": "2",
    "close_code": "",
    "close_notes": "",
    "assigned_to": {"link": "https://x.service-now.com/api/now/table/sys_user/46d44", "value": "46d44"},
    "short_description": "Wireless access is down in my area",
}
RESOLUTION = {"close_code": "Solved (Permanently)", "close_notes": "Replaced the access point."}


def sn(httpserver: HTTPServer, secrets: dict[str, str] | None = None) -> ServiceNowAdapter:
    config = {"instance_url": httpserver.url_for("/"), "timeout_seconds": TIMEOUT}
    return ServiceNowAdapter(config, secrets or {"username": USER, "password": PASSWORD})


def sn_error(message: str, detail: str = "") -> dict[str, object]:
    return {"error": {"message": message, "detail": detail}, "status": "failure"}


def test_registered_with_actions() -> None:
    assert adapter_class("servicenow") is ServiceNowAdapter
    assert set(ServiceNowAdapter.actions) == {"resolve_incident", "close_incident", "update"}


def test_read_unwraps_result_flattens_references_with_basic_auth(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"result": INCIDENT})
    record = sn(httpserver).read(TARGET)
    assert record["assigned_to"] == "46d44" and record["state"] == "2"
    request = sent(httpserver, "GET")[0]
    assert request.headers["Authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert request.args["sysparm_exclude_reference_link"] == "true"


def test_token_secret_uses_bearer(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"result": INCIDENT})
    sn(httpserver, {"token": TOKEN}).read(TARGET)
    assert sent(httpserver, "GET")[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_other_tables_come_from_the_target_type(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", "/api/now/table/change_request/abc", {"result": {"sys_id": "abc"}})
    assert sn(httpserver).read(Target("change_request", "abc")) == {"sys_id": "abc"}


def test_preview_of_resolve_shows_state_transition(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"result": INCIDENT})
    preview = sn(httpserver).preview("resolve_incident", TARGET, RESOLUTION)
    assert [c.field for c in preview.changes] == ["state", "close_code", "close_notes"]
    assert preview.changes[0].before == "2" and preview.changes[0].after == "6"
    assert preview.before == {"state": "2", "close_code": "", "close_notes": ""}


def test_preview_flags_sensitive_reassignment(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"result": INCIDENT})
    preview = sn(httpserver).preview("update", TARGET, {"assigned_to": "99ab", "urgency": "1"})
    assert {c.field: c.sensitive for c in preview.changes} == {"assigned_to": True, "urgency": False}


@pytest.mark.parametrize("missing", ["close_code", "close_notes"])
def test_resolve_without_close_fields_fails_before_any_call(httpserver: HTTPServer, missing: str) -> None:
    changes = {k: v for k, v in RESOLUTION.items() if k != missing}
    with pytest.raises(PermanentError, match=missing):
        sn(httpserver).execute("resolve_incident", TARGET, changes, "k")
    with pytest.raises(PermanentError, match=missing):
        sn(httpserver).preview("close_incident", TARGET, changes)
    assert httpserver.log == []


@pytest.mark.parametrize(("action", "state"), [("resolve_incident", "6"), ("close_incident", "7")])
def test_execute_patches_state_and_close_fields(httpserver: HTTPServer, action: str, state: str) -> None:
    serve(httpserver, "PATCH", PATH, {"result": {**INCIDENT, "state": state, **RESOLUTION}})
    result = sn(httpserver).execute(action, TARGET, RESOLUTION, "k")
    patch = sent(httpserver, "PATCH")[0]
    assert body_of(patch) == {"state": state, **RESOLUTION}
    assert patch.headers["Content-Type"] == "application/json"
    assert result.after["state"] == state and result.after["assigned_to"] == "46d44"
    assert result.request == {"method": "PATCH", "path": PATH, "fields": ["close_code", "close_notes", "state"]}


def test_compensate_patches_before_values(httpserver: HTTPServer) -> None:
    serve(httpserver, "PATCH", PATH, {"result": INCIDENT})
    before = {"state": "2", "close_code": "", "close_notes": ""}
    sn(httpserver).compensate("resolve_incident", TARGET, before)
    assert body_of(sent(httpserver, "PATCH")[0]) == before


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (401, sn_error("User Not Authenticated", "Required to provide Auth information"), AuthError),
        (403, sn_error("Operation Failed", "ACL Exception Update Failed due to security constraints"), AuthError),
        (404, sn_error("No Record found", "Record doesn't exist or ACL restricts the retrieval"), RecordNotFound),
        (409, sn_error("Conflict", "record was updated by another transaction"), WriteConflict),
        (400, sn_error("Invalid state transition", "Resolved incidents need a close code"), PermanentError),
        (500, sn_error("Internal server error"), TransientError),
    ],
)
def test_error_statuses_on_write(httpserver: HTTPServer, status: int, body: dict, cls: type) -> None:
    serve(httpserver, "PATCH", PATH, body, status=status)
    with pytest.raises(cls) as info:
        sn(httpserver).execute("update", TARGET, {"urgency": "1"}, "k")
    assert type(info.value) is cls and body["error"]["message"] in str(info.value)
    assert PASSWORD not in str(info.value)


def test_429_carries_retry_after(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, sn_error("Rate limit exceeded"), status=429, headers={"Retry-After": "4"})
    with pytest.raises(TransientError) as info:
        sn(httpserver).read(TARGET)
    assert info.value.retry_after == 4.0


def test_timeout_is_transient(httpserver: HTTPServer) -> None:
    with hung_vendor(httpserver, PATH, {"result": INCIDENT}), pytest.raises(TransientError, match="timed out"):
        sn(httpserver).read(TARGET)


def test_missing_credentials_is_an_auth_error() -> None:
    with pytest.raises(AuthError, match="username"):
        ServiceNowAdapter({"instance_url": "https://x.service-now.com"}, {}).read(TARGET)


def test_health_reads_one_user(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", "/api/now/table/sys_user", {"result": [{"sys_id": "6816f79c"}]})
    assert sn(httpserver).health().ok
    assert sent(httpserver, "GET")[0].args["sysparm_limit"] == "1"
    httpserver.clear()
    serve(httpserver, "GET", "/api/now/table/sys_user", sn_error("User Not Authenticated"), status=401)
    health = sn(httpserver).health()
    assert not health.ok and "User Not Authenticated" in health.detail
