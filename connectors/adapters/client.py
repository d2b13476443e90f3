"""Actions the submitting integration carries out itself (the SDK's `@governed` functions).

HITL Gov decides, records and audits; the client runs the function once the proposal is
approved and reports what happened (POST /api/v1/proposals/{id}/outcome/). No worker ever
writes through this kind, so `execute` and `compensate` refuse.

Config: `actions`, the actions integrations may propose, as a list (each an update of a
record) or a mapping of action to capability (read, draft, update, send, delete).
There is no live record to read: the preview shows every planned value as new.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import CAPABILITIES, Adapter, Health, PermanentError, Target, WriteResult, register


def configured_actions(config: Mapping[str, Any]) -> dict[str, str]:
    """The connector's `actions` setting as action -> capability (unknown capabilities count as update)."""
    actions = config.get("actions") or {}
    if isinstance(actions, Mapping):
        return {str(name): (cap if cap in CAPABILITIES else "update") for name, cap in actions.items()}
    if isinstance(actions, (list, tuple)):
        return {str(name): "update" for name in actions}
    return {}


@register
class ClientAdapter(Adapter):
    kind = "client"
    capabilities = frozenset(CAPABILITIES)
    actions: Mapping[str, str] = {}
    executed_by = "client"

    def __init__(self, config: Mapping[str, Any] | None = None, secrets: Mapping[str, str] | None = None):
        super().__init__(config, secrets)
        self.actions = configured_actions(self.config)

    def read(self, target: Target) -> dict[str, Any]:
        return {}  # the client's system is not visible to HITL Gov

    def execute(self, action: str, target: Target | None, changes: Mapping[str, Any], idempotency_key: str) -> WriteResult:
        raise PermanentError(f"the integration carries out {action} itself and reports the outcome")

    def compensate(self, action: str, target: Target | None, before: Mapping[str, Any]) -> WriteResult:
        raise PermanentError(f"{action} was carried out by the integration: undo it there")

    def health(self) -> Health:
        return Health(ok=True, detail=f"carried out by the integration: {', '.join(sorted(self.actions)) or 'no actions'}")
