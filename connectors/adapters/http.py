"""The JSON-over-HTTP client shared by every HTTP adapter.

One place turns HTTP outcomes into the connector error classes, so every vendor retries,
conflicts and fails the same way, and one place summarises what was sent without any
secret (only method, path and field names) for the Execution row. It uses the standard
library only, so the connectors add no dependency. Redirects are refused rather than
followed, so credentials are never replayed to another host, and only http(s) URLs are
accepted (urllib would otherwise happily open file: URLs from a mistyped config).
"""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

from connectors import outbound

from .base import (
    Adapter,
    AuthError,
    ConnectorError,
    Health,
    PermanentError,
    RecordNotFound,
    Target,
    TransientError,
    WriteConflict,
)

DEFAULT_TIMEOUT = 10.0
_SUMMARY_KEYS = 8


@dataclass(frozen=True)
class HttpResponse:
    """A parsed response plus the secret-free summaries stored with the execution."""

    status: int
    headers: Message
    data: Any
    request: dict[str, Any]
    response: dict[str, Any]


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Turn any 3xx into an error instead of re-sending the Authorization header elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delta-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def vendor_message(body: Any) -> str:
    """Pull the human-readable message out of the error shapes our vendors document."""
    if isinstance(body, list):  # Salesforce: [{"message", "errorCode", "fields"}]
        parts = [_one_message(item) for item in body if isinstance(item, dict)]
        return "; ".join(p for p in parts if p)
    if isinstance(body, dict):
        return _one_message(body)
    return str(body or "").strip()[:300]


def _one_message(item: Mapping[str, Any]) -> str:
    error = item.get("error")
    if isinstance(error, dict):  # ServiceNow: {"error": {"message", "detail"}}
        message, detail = error.get("message") or "", error.get("detail") or ""
        return f"{message} ({detail})" if detail else str(message)
    if isinstance(error, str):  # Zendesk: {"error", "description", "details"}
        description = item.get("description") or item.get("message") or ""
        details = item.get("details")
        text = f"{error}: {description}" if description else error
        return f"{text} {json.dumps(details, sort_keys=True)}" if details else text
    message = item.get("message") or item.get("detail") or item.get("title") or ""
    code = item.get("errorCode") or item.get("code")
    fields = item.get("fields")
    text = f"{code}: {message}" if code else str(message)
    return f"{text} (fields: {', '.join(map(str, fields))})" if fields else text


def basic_auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def require_secret(secrets: Mapping[str, str], name: str, kind: str) -> str:
    """A missing credential is an auth problem the operator must fix, not a crash."""
    value = secrets.get(name)
    if not value:
        raise AuthError(f"the {kind} connector has no {name!r} credential configured")
    return value


class JsonHttpClient:
    """Send one JSON request and return parsed JSON, or raise the matching ConnectorError."""

    def __init__(
        self, base_url: str, *, headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT, vendor: str = "HTTP",
    ):
        scheme = urllib.parse.urlsplit(base_url or "").scheme
        if scheme not in ("http", "https"):
            raise PermanentError(f"{vendor} base URL must start with http:// or https:// (got {base_url!r})")
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.vendor = vendor
        self._opener = outbound.build_opener(_RefuseRedirects)  # public addresses only, pinned

    def request(
        self, method: str, path: str, *, json_body: Any = None,
        params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        data = None if json_body is None else json.dumps(json_body).encode()
        all_headers = {"Accept": "application/json", **self.headers, **(headers or {})}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        summary: dict[str, Any] = {"method": method, "path": path}
        if isinstance(json_body, dict):
            summary["fields"] = sorted(json_body)
        req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        where = f"{self.vendor} {method} {path}"
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                status, resp_headers, raw = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            raise self._error(where, exc.code, exc.headers, _read(exc)) from None
        except outbound.OutboundRefused as exc:
            raise PermanentError(f"{where} refused: {exc}") from None
        except TimeoutError:
            raise TransientError(f"{where} timed out after {self.timeout:g}s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise TransientError(f"{where} timed out after {self.timeout:g}s") from None
            raise TransientError(f"{where} could not connect: {exc.reason}") from None
        except (http.client.HTTPException, OSError) as exc:
            raise TransientError(f"{where} failed: {exc.__class__.__name__}: {exc}") from None
        parsed = _parse(raw)
        return HttpResponse(status, resp_headers, parsed, summary, _summarise(status, parsed))

    def _error(self, where: str, status: int, headers: Message, raw: bytes) -> ConnectorError:
        message = vendor_message(_parse(raw)) or http.client.responses.get(status, "")
        text = f"{where} -> {status}: {message}"
        if status in (401, 403):
            return AuthError(text, status=status)
        if status == 404:
            return RecordNotFound(text, status=status)
        if status in (409, 412):
            return WriteConflict(text, status=status)
        if status == 429 or status >= 500:
            return TransientError(text, status=status, retry_after=parse_retry_after(headers.get("Retry-After")))
        if 300 <= status < 400:
            where_to = headers.get("Location")
            return PermanentError(f"{text} redirect to {where_to!r} refused; check the URL", status=status)
        return PermanentError(text, status=status)


def _read(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except (OSError, http.client.HTTPException):
        return b""


def _parse(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _summarise(status: int, data: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {"status": status}
    if isinstance(data, dict):
        summary["keys"] = sorted(data)[:_SUMMARY_KEYS]
    elif isinstance(data, list):
        summary["items"] = len(data)
    return summary


def quote(segment: str) -> str:
    """One URL path segment: a record id can never climb out of its collection."""
    return urllib.parse.quote(str(segment), safe="")


class HttpAdapter(Adapter):
    """Shared plumbing of the HTTP adapters: one client per call, and a health probe."""

    vendor: ClassVar[str] = "HTTP"
    base_url_key: ClassVar[str] = "base_url"
    client_class: ClassVar[type[JsonHttpClient]] = JsonHttpClient

    def auth_headers(self) -> dict[str, str]:
        return {}

    def client(self) -> JsonHttpClient:
        timeout = float(self.config.get("timeout_seconds", DEFAULT_TIMEOUT))
        base_url = str(self.config.get(self.base_url_key) or "")
        return self.client_class(base_url, headers=self.auth_headers(), timeout=timeout, vendor=self.vendor)

    def probe(self, path: str, params: Mapping[str, str] | None = None) -> Health:
        """A cheap authenticated GET: proves the URL, the network and the credentials."""
        try:
            resp = self.client().request("GET", path, params=params)
        except ConnectorError as exc:
            return Health(ok=False, detail=str(exc))
        return Health(ok=True, detail=f"{self.vendor} answered {resp.status} to GET {path}")

    @staticmethod
    def need_target(target: Target | None, action: str) -> Target:
        if target is None or not target.id:
            raise PermanentError(f"action {action!r} needs a target record")
        return target

    def unsupported(self, action: str) -> PermanentError:
        return PermanentError(f"the {self.kind} connector does not support action {action!r}")
