"""Salesforce adapter over the REST API's sObject resources.

Writes are conditional: the PATCH carries `If-Unmodified-Since` set to the record's
LastModifiedDate, so a change made by someone else between our read and our write is
refused with 412 (-> WriteConflict) instead of being silently overwritten. Salesforce has
no idempotency key for sObject PATCH, but setting fields to fixed values is idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from email.message import Message
from email.utils import format_datetime
from typing import Any

from .base import ConnectorError, Health, PermanentError, Preview, Target, TransientError, WriteResult, register
from .http import HttpAdapter, JsonHttpClient, quote, require_secret

ACTION_TYPES = {"update_opportunity": "Opportunity", "update_account": "Account", "update_contact": "Contact"}


def http_date(last_modified: Any) -> str | None:
    """Salesforce dates look like 2024-05-01T12:34:56.000+0000; headers want RFC 9110 dates."""
    if not isinstance(last_modified, str):
        return None
    for parse in (datetime.fromisoformat, lambda s: datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%f%z")):
        try:
            when = parse(last_modified)
        except ValueError:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return format_datetime(when.astimezone(timezone.utc), usegmt=True)
    return None


class SalesforceClient(JsonHttpClient):
    """Salesforce reports an exhausted API quota as 403 REQUEST_LIMIT_EXCEEDED: wait, don't fail."""

    def _error(self, where: str, status: int, headers: Message, raw: bytes) -> ConnectorError:
        error = super()._error(where, status, headers, raw)
        if status == 403 and "REQUEST_LIMIT_EXCEEDED" in str(error):
            return TransientError(str(error), status=status)
        return error


@register
class SalesforceAdapter(HttpAdapter):
    kind = "salesforce"
    vendor = "Salesforce"
    base_url_key = "instance_url"
    client_class = SalesforceClient
    capabilities = frozenset({"read", "update"})
    actions = {**{name: "update" for name in ACTION_TYPES}, "update": "update"}
    sensitive_fields = frozenset({"OwnerId", "Amount", "Email", "Phone"})

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + require_secret(self.secrets, "access_token", self.kind)}

    def _version(self) -> str:
        version = str(self.config.get("api_version", "v60.0"))
        return version if version.startswith("v") else "v" + version

    def _path(self, target: Target) -> str:
        return f"/services/data/{self._version()}/sobjects/{quote(target.type)}/{quote(target.id)}"

    def _resolve(self, action: str, target: Target | None) -> Target:
        """The target's own sObject type wins; otherwise the action names it."""
        target = self.need_target(target, action)
        if action not in self.actions:
            raise self.unsupported(action)
        sobject = target.type or ACTION_TYPES.get(action)
        if not sobject:
            raise PermanentError(f"action {action!r} needs a target type (the sObject name)")
        return Target(type=sobject, id=target.id)

    def read(self, target: Target) -> dict[str, Any]:
        data = self.client().request("GET", self._path(target)).data
        if not isinstance(data, dict):
            raise PermanentError(f"Salesforce returned no record for {target.type}/{target.id}")
        return {k: v for k, v in data.items() if k != "attributes"}

    def preview(self, action: str, target: Target | None, changes: Mapping[str, Any]) -> Preview:
        return super().preview(action, self._resolve(action, target), changes)

    def _patch(self, target: Target, values: Mapping[str, Any]) -> WriteResult:
        since = http_date(self.read(target).get("LastModifiedDate"))
        headers = {"If-Unmodified-Since": since} if since else {}
        resp = self.client().request("PATCH", self._path(target), json_body=dict(values), headers=headers)
        return WriteResult(after=self.read(target), request=resp.request, response=resp.response)

    def execute(
        self, action: str, target: Target | None, changes: Mapping[str, Any], idempotency_key: str
    ) -> WriteResult:
        return self._patch(self._resolve(action, target), changes)

    def compensate(self, action: str, target: Target | None, before: Mapping[str, Any]) -> WriteResult:
        return self._patch(self._resolve(action, target), before)

    def health(self) -> Health:
        return self.probe(f"/services/data/{self._version()}/limits")
