"""ServiceNow adapter over the Table API.

Resolving or closing an incident requires a close code and close notes in ServiceNow;
we refuse the action before any call when they are missing, so a reviewer never approves
a change the instance will reject. The preview shows the state transition as well, so
compensation can put the previous state back. The Table API has no conditional update:
a 409/412 (e.g. from a business rule) still maps to WriteConflict, but the main stale-
data guard is the executor's re-read before writing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Health, PermanentError, Preview, Target, WriteResult, register
from .http import HttpAdapter, basic_auth, quote, require_secret

STATES = {"resolve_incident": "6", "close_incident": "7"}  # incident.state choice values
FLAT = {"sysparm_exclude_reference_link": "true"}  # reference fields as plain sys_ids


def flatten(record: Mapping[str, Any]) -> dict[str, Any]:
    """Reference fields may still come as {"value", "link"}: keep the value."""
    return {k: v.get("value") if isinstance(v, dict) and "value" in v else v for k, v in record.items()}


@register
class ServiceNowAdapter(HttpAdapter):
    kind = "servicenow"
    vendor = "ServiceNow"
    base_url_key = "instance_url"
    capabilities = frozenset({"read", "update"})
    actions = {"resolve_incident": "update", "close_incident": "update", "update": "update"}
    sensitive_fields = frozenset({"assigned_to", "assignment_group", "caller_id"})

    def auth_headers(self) -> dict[str, str]:
        if self.secrets.get("token"):
            return {"Authorization": "Bearer " + self.secrets["token"]}
        user = require_secret(self.secrets, "username", self.kind)
        return {"Authorization": basic_auth(user, require_secret(self.secrets, "password", self.kind))}

    @staticmethod
    def _path(target: Target) -> str:
        return f"/api/now/table/{quote(target.type or 'incident')}/{quote(target.id)}"

    def _body(self, action: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        if action in STATES:
            missing = [name for name in ("close_code", "close_notes") if not changes.get(name)]
            if missing:
                raise PermanentError(f"{action} needs {' and '.join(missing)} (ServiceNow requires them to resolve)")
            return {"state": STATES[action], "close_code": changes["close_code"], "close_notes": changes["close_notes"]}
        if action == "update":
            return dict(changes)
        raise self.unsupported(action)

    def _result(self, data: Any, target: Target) -> dict[str, Any]:
        if not isinstance(data, dict) or not isinstance(data.get("result"), dict):
            raise PermanentError(f"ServiceNow returned no record for {target.type}/{target.id}")
        return flatten(data["result"])

    def read(self, target: Target) -> dict[str, Any]:
        return self._result(self.client().request("GET", self._path(target), params=FLAT).data, target)

    def preview(self, action: str, target: Target | None, changes: Mapping[str, Any]) -> Preview:
        return super().preview(action, self.need_target(target, action), self._body(action, changes))

    def _patch(self, target: Target, values: Mapping[str, Any]) -> WriteResult:
        resp = self.client().request("PATCH", self._path(target), json_body=dict(values), params=FLAT)
        return WriteResult(after=self._result(resp.data, target), request=resp.request, response=resp.response)

    def execute(
        self, action: str, target: Target | None, changes: Mapping[str, Any], idempotency_key: str
    ) -> WriteResult:
        body = self._body(action, changes)
        return self._patch(self.need_target(target, action), body)

    def compensate(self, action: str, target: Target | None, before: Mapping[str, Any]) -> WriteResult:
        if action not in self.actions:
            raise self.unsupported(action)
        return self._patch(self.need_target(target, action), before)

    def health(self) -> Health:
        return self.probe("/api/now/table/sys_user", params={"sysparm_limit": "1"})
