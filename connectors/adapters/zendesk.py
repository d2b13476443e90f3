"""Zendesk Support adapter over the Tickets API.

Every write is a "safe update" (`safe_update` + `updated_stamp` from our read), so a
ticket changed by an agent in the meantime gives 409 -> WriteConflict. Zendesk documents
the Idempotency-Key header for ticket creation; we send it anyway, but a comment is not
idempotent, so comment writes also stamp the idempotency key into the audit's custom
metadata and, before writing, look for it in the ticket's recent audits: a retry after a
lost response then finds its own reply instead of posting it to the customer twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import Health, PermanentError, Preview, Target, WriteResult, register
from .http import HttpAdapter, basic_auth, quote, require_secret

COMMENT_ACTIONS = {"public_reply": True, "internal_note": False}  # action -> comment is public
MARK = "hitlgov_idempotency_key"


@register
class ZendeskAdapter(HttpAdapter):
    kind = "zendesk"
    vendor = "Zendesk"
    base_url_key = "subdomain_url"
    capabilities = frozenset({"read", "update", "send"})
    actions = {"set_status": "update", "public_reply": "send", "internal_note": "update", "update": "update"}
    sensitive_fields = frozenset({"assignee_id", "requester_id", "organization_id"})

    def auth_headers(self) -> dict[str, str]:
        email = require_secret(self.secrets, "email", self.kind)
        return {"Authorization": basic_auth(f"{email}/token", require_secret(self.secrets, "api_token", self.kind))}

    @staticmethod
    def _path(target: Target) -> str:
        return f"/api/v2/tickets/{quote(target.id)}.json"

    def read(self, target: Target) -> dict[str, Any]:
        data = self.client().request("GET", self._path(target)).data
        if not isinstance(data, dict) or not isinstance(data.get("ticket"), dict):
            raise PermanentError(f"Zendesk returned no ticket for {target.id}")
        return data["ticket"]

    def _fields(self, action: str, changes: Mapping[str, Any]) -> dict[str, Any]:
        """The ticket properties an action writes; refuses malformed changes before any call."""
        if action == "set_status":
            if not changes.get("status"):
                raise PermanentError("set_status needs changes {'status': ...}")
            return {"status": changes["status"]}
        if action in COMMENT_ACTIONS:
            if not isinstance(changes.get("body"), str) or not changes["body"].strip():
                raise PermanentError(f"{action} needs changes {{'body': '...'}}")
            return {"comment": {"body": changes["body"], "public": COMMENT_ACTIONS[action]}}
        if action == "update":
            return dict(changes)
        raise self.unsupported(action)

    def preview(self, action: str, target: Target | None, changes: Mapping[str, Any]) -> Preview:
        self._fields(action, changes)
        return super().preview(action, self.need_target(target, action), changes)

    def _already_sent(self, target: Target, key: str) -> bool:
        path = f"/api/v2/tickets/{quote(target.id)}/audits.json"
        resp = self.client().request("GET", path, params={"sort_order": "desc"})
        audits = resp.data.get("audits", []) if isinstance(resp.data, dict) else []
        return any(((a.get("metadata") or {}).get("custom") or {}).get(MARK) == key for a in audits)

    def _put(self, target: Target, fields: dict[str, Any], key: str) -> WriteResult:
        updated_at = self.read(target).get("updated_at")
        ticket = {**fields, "metadata": {"custom": {MARK: key}}} if key else dict(fields)
        if updated_at:
            ticket.update(safe_update=True, updated_stamp=updated_at)
        headers = {"Idempotency-Key": key} if key else {}
        resp = self.client().request("PUT", self._path(target), json_body={"ticket": ticket}, headers=headers)
        after = resp.data.get("ticket") if isinstance(resp.data, dict) else None
        return WriteResult(after=after or self.read(target), request=resp.request, response=resp.response)

    def execute(
        self, action: str, target: Target | None, changes: Mapping[str, Any], idempotency_key: str
    ) -> WriteResult:
        fields = self._fields(action, changes)
        target = self.need_target(target, action)
        if action in COMMENT_ACTIONS and idempotency_key and self._already_sent(target, idempotency_key):
            return WriteResult(
                after=self.read(target),
                request={"method": "PUT", "path": self._path(target), "skipped": "already applied"},
                response={"replayed": True},
            )
        return self._put(target, fields, idempotency_key)

    def compensate(self, action: str, target: Target | None, before: Mapping[str, Any]) -> WriteResult:
        if action == "public_reply":
            raise PermanentError("a public reply cannot be unsent")
        if action == "internal_note":
            raise PermanentError("an internal note cannot be removed; redact it in Zendesk if needed")
        if action not in self.actions:
            raise self.unsupported(action)
        return self._put(self.need_target(target, action), dict(before), "")

    def health(self) -> Health:
        return self.probe("/api/v2/users/me.json")
