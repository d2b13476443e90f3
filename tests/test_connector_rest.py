"""Contract tests of the generic REST adapter and the shared HTTP client, against a local server."""

from __future__ import annotations

import re

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
from connectors.adapters.http import JsonHttpClient, parse_retry_after, vendor_message
from connectors.adapters.rest import RestAdapter
from tests.connector_fakes import TIMEOUT, body_of, http_date_in, hung_vendor, json_response, sent, serve

TOKEN = "rest-secret-token-0123456789"
PATH = "/api/invoice/INV-1"
TARGET = Target("invoice", "INV-1")
RECORD = {"id": "INV-1", "status": "draft", "amount": 100, "owner": "ann", "version": 3}


def rest(httpserver: HTTPServer, **config: object) -> RestAdapter:
    base = {
        "base_url": httpserver.url_for("/"),
        "record_url": "/api/{type}/{id}",
        "timeout_seconds": TIMEOUT,
        "health_path": "/api/health",
        "idempotency_header": "Idempotency-Key",
    }
    return RestAdapter({**base, **config}, {"token": TOKEN})


def test_registered_under_its_kind() -> None:
    assert adapter_class("rest") is RestAdapter


def test_read_sends_bearer_token(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, RECORD)
    assert rest(httpserver).read(TARGET) == RECORD
    assert sent(httpserver, "GET")[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_custom_auth_header_and_prefix(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, RECORD)
    rest(httpserver, auth_header="X-Api-Key", auth_prefix="").read(TARGET)
    request = sent(httpserver, "GET")[0]
    assert request.headers["X-Api-Key"] == TOKEN
    assert "Authorization" not in request.headers


def test_record_id_cannot_escape_its_path(httpserver: HTTPServer) -> None:
    httpserver.expect_request(re.compile("^/api/")).respond_with_response(json_response(RECORD))
    rest(httpserver).read(Target("invoice", "../admin"))
    assert sent(httpserver, "GET")[0].environ["REQUEST_URI"] == "/api/invoice/..%2Fadmin"


def test_preview_diffs_live_record_and_flags_configured_sensitive_fields(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, RECORD)
    preview = rest(httpserver, sensitive_fields=["owner"]).preview(
        "update", TARGET, {"status": "sent", "owner": "bob", "amount": 100}
    )
    assert [c.as_dict() for c in preview.changes] == [
        {"field": "status", "before": "draft", "after": "sent", "sensitive": False},
        {"field": "owner", "before": "ann", "after": "bob", "sensitive": True},
    ]
    assert preview.before == {"status": "draft", "owner": "ann", "amount": 100}


def test_execute_patches_changes_with_idempotency_key(httpserver: HTTPServer) -> None:
    serve(httpserver, "PATCH", PATH, {**RECORD, "status": "sent"})
    result = rest(httpserver).execute("update", TARGET, {"status": "sent"}, "key-123")
    patch = sent(httpserver, "PATCH")[0]
    assert body_of(patch) == {"status": "sent"}
    assert patch.headers["Idempotency-Key"] == "key-123"
    assert patch.headers["Content-Type"] == "application/json"
    assert result.after["status"] == "sent"
    assert result.request == {"method": "PATCH", "path": PATH, "fields": ["status"]}
    assert result.response["status"] == 200
    assert TOKEN not in repr(result)


def test_execute_rereads_after_204(httpserver: HTTPServer) -> None:
    serve(httpserver, "PATCH", PATH, None, status=204)
    serve(httpserver, "GET", PATH, {**RECORD, "status": "sent"})
    result = rest(httpserver).execute("update", TARGET, {"status": "sent"}, "k")
    assert result.after["status"] == "sent"
    assert result.response == {"status": 204}


def test_put_sends_whole_record_with_if_match_from_etag(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, RECORD, headers={"ETag": '"v3"'})
    serve(httpserver, "PUT", PATH, {**RECORD, "status": "sent"})
    rest(httpserver, update_method="PUT", version_field="version").execute("update", TARGET, {"status": "sent"}, "k")
    put = sent(httpserver, "PUT")[0]
    assert body_of(put) == {**RECORD, "status": "sent"}
    assert put.headers["If-Match"] == '"v3"'


def test_version_field_is_sent_when_server_gives_no_etag(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, RECORD)
    serve(httpserver, "PATCH", PATH, {**RECORD, "status": "sent", "version": 4})
    rest(httpserver, version_field="version").execute("update", TARGET, {"status": "sent"}, "k")
    patch = sent(httpserver, "PATCH")[0]
    assert body_of(patch) == {"status": "sent", "version": 3}
    assert "If-Match" not in patch.headers


def test_compensate_writes_before_values_back(httpserver: HTTPServer) -> None:
    serve(httpserver, "PATCH", PATH, RECORD)
    result = rest(httpserver).compensate("update", TARGET, {"status": "draft"})
    assert body_of(sent(httpserver, "PATCH")[0]) == {"status": "draft"}
    assert result.after == RECORD


def test_delete_only_when_configured(httpserver: HTTPServer) -> None:
    assert not rest(httpserver).supports("delete")
    with pytest.raises(PermanentError, match="does not support"):
        rest(httpserver).execute("delete", TARGET, {}, "k")
    adapter = rest(httpserver, delete_method="DELETE")
    assert adapter.supports("delete") and adapter.is_write("delete")
    serve(httpserver, "DELETE", PATH, None, status=204)
    assert adapter.execute("delete", TARGET, {}, "del-1").after == {}
    assert sent(httpserver, "DELETE")[0].headers["Idempotency-Key"] == "del-1"
    with pytest.raises(PermanentError, match="cannot be restored"):
        adapter.compensate("delete", TARGET, {})


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (401, {"message": "token expired"}, AuthError),
        (403, {"message": "forbidden"}, AuthError),
        (404, {"detail": "no such invoice"}, RecordNotFound),
        (500, {"message": "boom"}, TransientError),
        (503, "<html>down</html>", TransientError),
        (422, {"message": "amount must be positive", "code": "invalid"}, PermanentError),
    ],
)
def test_status_codes_map_to_error_classes(httpserver: HTTPServer, status: int, error: object, cls: type) -> None:
    httpserver.expect_request(PATH).respond_with_response(json_response(error, status))
    with pytest.raises(cls) as info:
        rest(httpserver).read(TARGET)
    assert type(info.value) is cls
    assert info.value.status == status
    assert TOKEN not in str(info.value)


def test_vendor_message_is_surfaced(httpserver: HTTPServer) -> None:
    serve(httpserver, "PATCH", PATH, {"message": "amount must be positive", "code": "invalid"}, status=422)
    with pytest.raises(PermanentError, match="422: invalid: amount must be positive"):
        rest(httpserver).execute("update", TARGET, {"amount": -1}, "k")


@pytest.mark.parametrize("status", [409, 412])
def test_conflict_on_write(httpserver: HTTPServer, status: int) -> None:
    serve(httpserver, "GET", PATH, RECORD, headers={"ETag": '"v3"'})
    serve(httpserver, "PATCH", PATH, {"message": "version mismatch"}, status=status)
    with pytest.raises(WriteConflict, match="version mismatch"):
        rest(httpserver, version_field="version").execute("update", TARGET, {"status": "sent"}, "k")


def test_429_retry_after_seconds(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"message": "slow down"}, status=429, headers={"Retry-After": "7"})
    with pytest.raises(TransientError) as info:
        rest(httpserver).read(TARGET)
    assert info.value.retry_after == 7.0
    assert info.value.status == 429


def test_429_retry_after_http_date(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, {"message": "slow down"}, status=429, headers={"Retry-After": http_date_in(120)})
    with pytest.raises(TransientError) as info:
        rest(httpserver).read(TARGET)
    assert info.value.retry_after is not None and 100 <= info.value.retry_after <= 120


def test_timeout_is_transient(httpserver: HTTPServer) -> None:
    with hung_vendor(httpserver, PATH, RECORD), pytest.raises(TransientError, match="timed out after 0.5s"):
        rest(httpserver).read(TARGET)


def test_connection_refused_is_transient(allow_loopback) -> None:
    adapter = RestAdapter({"base_url": "http://127.0.0.1:9", "timeout_seconds": TIMEOUT}, {"token": TOKEN})
    with pytest.raises(TransientError, match="could not connect"):
        adapter.read(TARGET)


def test_redirect_is_refused_not_followed(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", PATH, None, status=302, headers={"Location": "http://elsewhere.example/steal"})
    with pytest.raises(PermanentError, match="redirect"):
        rest(httpserver).read(TARGET)


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(PermanentError, match="http"):
        RestAdapter({"base_url": "file:///etc"}, {}).read(TARGET)


def test_health_ok_and_failing(httpserver: HTTPServer) -> None:
    serve(httpserver, "GET", "/api/health", {"ok": True})
    health = rest(httpserver).health()
    assert health.ok and "200" in health.detail
    assert sent(httpserver, "GET")[0].headers["Authorization"] == f"Bearer {TOKEN}"
    httpserver.clear()
    serve(httpserver, "GET", "/api/health", {"message": "bad token"}, status=401)
    health = rest(httpserver).health()
    assert not health.ok and "bad token" in health.detail


def test_parse_retry_after_variants() -> None:
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_vendor_message_shapes() -> None:
    assert vendor_message([{"message": "Bad", "errorCode": "E", "fields": ["Amount"]}]) == "E: Bad (fields: Amount)"
    assert vendor_message({"error": "RecordInvalid", "description": "Invalid"}) == "RecordInvalid: Invalid"
    assert vendor_message({"error": {"message": "No Record found", "detail": "ACL"}}) == "No Record found (ACL)"


def test_client_timeout_default_is_ten_seconds() -> None:
    assert JsonHttpClient("https://example.com").timeout == 10.0
