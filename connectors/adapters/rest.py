"""Generic REST/JSON adapter: for in-house systems that expose one URL per record.

Everything vendor-specific is configuration (URL template, methods, auth header), so a
team can govern writes to its own service without writing an adapter. PUT replaces a
whole resource, so for PUT the adapter sends the live record merged with the changes
rather than the changed fields alone (which would wipe the others).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Health, PermanentError, Target, WriteResult, register
from .http import HttpAdapter, HttpResponse, quote


@register
class RestAdapter(HttpAdapter):
    kind = "rest"
    vendor = "REST"
    capabilities = frozenset({"read", "update", "delete"})
    actions = {"update": "update", "delete": "delete"}

    def supports(self, action: str) -> bool:
        """`delete` exists only when the connector configures a delete_method."""
        return action in self.actions and (action != "delete" or bool(self.config.get("delete_method")))

    def auth_headers(self) -> dict[str, str]:
        token = self.secrets.get("token")
        if not token:  # an internal API may sit behind network auth only
            return {}
        name = self.config.get("auth_header", "Authorization")
        return {name: f"{self.config.get('auth_prefix', 'Bearer ')}{token}"}

    def _path(self, target: Target) -> str:
        template = str(self.config.get("record_url", "/{type}/{id}"))
        try:
            return template.format(type=quote(target.type), id=quote(target.id))
        except (KeyError, IndexError, ValueError):
            raise PermanentError(f"REST record_url {template!r} may only use {{type}} and {{id}}") from None

    def _method(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        method = str(self.config.get(key, default)).upper()
        if method not in allowed:
            raise PermanentError(f"REST connector {key} must be one of {', '.join(allowed)} (got {method!r})")
        return method

    def _fetch(self, target: Target) -> tuple[dict[str, Any], str | None]:
        resp = self.client().request(self._method("read_method", "GET", ("GET", "POST")), self._path(target))
        if not isinstance(resp.data, dict):
            raise PermanentError(f"REST read of {target.type}/{target.id} did not return a JSON object")
        return resp.data, resp.headers.get("ETag")

    def read(self, target: Target) -> dict[str, Any]:
        return self._fetch(target)[0]

    def _idempotency(self, key: str) -> dict[str, str]:
        header = self.config.get("idempotency_header")
        return {header: key} if header and key else {}

    def _write(self, target: Target, values: Mapping[str, Any], headers: dict[str, str]) -> WriteResult:
        method = self._method("update_method", "PATCH", ("PATCH", "PUT", "POST"))
        body = dict(values)
        version_field = self.config.get("version_field")
        if method == "PUT" or version_field:
            current, etag = self._fetch(target)
            if method == "PUT":
                body = {**current, **body}
            if etag:
                headers["If-Match"] = etag
            elif version_field and version_field in current:
                body.setdefault(version_field, current[version_field])
        resp = self.client().request(method, self._path(target), json_body=body, headers=headers)
        return WriteResult(after=self._after(target, resp), request=resp.request, response=resp.response)

    def _after(self, target: Target, resp: HttpResponse) -> dict[str, Any]:
        """Prefer the record the server echoed; re-read when it answered 204 or a non-record."""
        return resp.data if isinstance(resp.data, dict) and resp.data else self.read(target)

    def execute(
        self, action: str, target: Target | None, changes: Mapping[str, Any], idempotency_key: str
    ) -> WriteResult:
        target = self.need_target(target, action)
        if action == "update":
            return self._write(target, changes, self._idempotency(idempotency_key))
        if action == "delete" and self.supports("delete"):
            method = self._method("delete_method", "DELETE", ("DELETE", "POST", "PATCH"))
            resp = self.client().request(method, self._path(target), headers=self._idempotency(idempotency_key))
            return WriteResult(after={}, request=resp.request, response=resp.response)
        raise self.unsupported(action)

    def compensate(self, action: str, target: Target | None, before: Mapping[str, Any]) -> WriteResult:
        target = self.need_target(target, action)
        if action == "delete":
            raise PermanentError("a deleted record cannot be restored through the REST connector")
        if action != "update":
            raise self.unsupported(action)
        return self._write(target, before, {})

    def health(self) -> Health:
        path = self.config.get("health_path")
        if not path:
            return super().health()
        return self.probe(str(path))
