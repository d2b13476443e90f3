"""How the rest of HITL Gov uses connectors: build an adapter, preview, write, undo."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from connectors import adapters  # noqa: F401  (registers every adapter kind)
from connectors.adapters.base import (
    ActionFacts, Adapter, ConnectorError, Health, PermanentError, Preview, Target, WriteConflict, WriteResult,
    adapter_class, kinds_executed_by_client,
)
from connectors.models import Connector
from connectors.secrets import resolve_secret


__all__ = [  # the front door: the rest of HITL Gov imports connectors from here, not from adapters
    "ActionFacts", "action_facts", "Adapter", "ConnectorError", "Health", "PermanentError", "Preview", "Target",
    "WriteConflict", "WriteResult",
    "adapter_for", "target_of", "preview_change", "supported_actions", "check_health", "adapter_capability",
    "executed_by_client", "at_most_once", "kinds_executed_by_client", "refresh_mcp_tools",
]


def adapter_for(connector: Connector) -> Adapter:
    """An adapter for this connector with its credentials resolved from their references."""
    config = {**connector.config, "connector_slug": connector.slug}
    secrets = {name: resolve_secret(ref) for name, ref in (connector.credentials or {}).items()}
    return adapter_class(connector.kind)(config=config, secrets=secrets)


def target_of(target_type: str, target_id: str) -> Target | None:
    return Target(type=target_type, id=target_id) if target_id else None


def preview_change(connector: Connector, action: str, target: Target | None, changes: Mapping[str, Any]) -> Preview:
    return adapter_for(connector).preview(action, target, changes)


def action_facts(connector: Connector, action: str) -> ActionFacts:
    """Which of a change's fields carry money or are sensitive, and whether the customer sees it."""
    try:
        return adapter_class(connector.kind)(config=connector.config).action_facts(action)  # no secrets needed
    except ConnectorError:
        return ActionFacts()


def supported_actions(connector: Connector) -> list[str]:
    """The actions integrations may propose: the adapter's, narrowed by the connector's `actions` setting."""
    try:
        adapter = adapter_class(connector.kind)(config=connector.config)  # no secrets needed to answer
    except ConnectorError:
        return []
    configured = connector.config.get("actions") or adapter.actions
    return sorted(action for action in configured if adapter.supports(action))


def check_health(connector: Connector, user=None) -> Health:
    """Run the adapter's health check and remember the result for the admin (and who asked)."""
    try:
        health = adapter_for(connector).health()
    except (ConnectorError, ValueError) as exc:
        health = Health(ok=False, detail=str(exc))
    connector.health_ok, connector.health_detail = health.ok, health.detail[:500]
    connector.health_checked_at = timezone.now()
    connector._change_reason = "health checked"
    if user is not None:
        connector._history_user = user
    connector.save(update_fields=["health_ok", "health_detail", "health_checked_at"])
    return health


def adapter_capability(connector: Connector, action: str) -> str:
    """What an action does to the system of record: read, draft, update, send or delete."""
    return adapter_class(connector.kind)(config=connector.config).capability(action)  # no secrets needed


def executed_by_client(connector: Connector) -> bool:
    """Whether the submitting integration carries out this connector's approved actions itself."""
    try:
        return adapter_class(connector.kind).executed_by == "client"
    except ConnectorError:
        return False


def at_most_once(connector: Connector) -> bool:
    """Whether a write through this connector must never be repeated when its outcome is unknown."""
    try:
        return adapter_class(connector.kind).at_most_once
    except ConnectorError:
        return False


def base_url_key(kind: str) -> str | None:
    """The config key holding the kind's base URL (HTTP adapters), or None."""
    try:
        return getattr(adapter_class(kind), "base_url_key", None)
    except ConnectorError:
        return None


# ---- changing connectors: the only way the admin (or anything else) edits one

EDITABLE_FIELDS = frozenset({"slug", "name", "kind", "enabled", "dry_run", "config", "credentials"})


def _require(user, codename: str) -> None:
    if not (user and user.is_active and user.has_perm(f"connectors.{codename}")):
        raise PermissionDenied(f"changing connectors needs the connectors.{codename} permission")


def _apply(connector: Connector, user, fields: Mapping[str, Any], reason: str) -> Connector:
    unknown = sorted(set(fields) - EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({name: "cannot be set on a connector" for name in unknown})
    if not reason.strip():
        raise ValidationError({"reason": "say why the connector changes: it is kept in its history"})
    for name, value in fields.items():
        setattr(connector, name, value)
    connector.full_clean()
    connector._history_user, connector._change_reason = user, reason.strip()
    connector.save()
    return connector


@transaction.atomic
def create_connector(user, fields: Mapping[str, Any], reason: str) -> Connector:
    """A new connector, with who made it and why in its history."""
    _require(user, "add_connector")
    return _apply(Connector(), user, fields, reason)


@transaction.atomic
def update_connector(connector_id: int, user, fields: Mapping[str, Any], reason: str) -> Connector:
    """Change a connector's settings (enabled, dry_run, kind, config, credentials...) with who and why."""
    _require(user, "change_connector")
    connector = Connector.objects.select_for_update().get(pk=connector_id)
    return _apply(connector, user, fields, reason)


def refresh_mcp_tools(connector_id: int, user, reason: str = "tools listed again from the upstream MCP server") -> Connector:
    """List an MCP connector's upstream tools and store them as its actions, with who and why in its history.

    The listing talks to the upstream, so it runs before the transaction. Tools the board marked
    read-only or gave a compensating tool keep those settings; a tool the upstream dropped is no
    longer an action (proposals for it are refused at submission).
    """
    _require(user, "change_connector")
    connector = Connector.objects.get(pk=connector_id)
    if connector.kind != "mcp":
        raise ValidationError({"kind": f"{connector.slug} is a {connector.kind} connector, not an MCP one"})
    tools = adapter_for(connector).list_tools()
    with transaction.atomic():
        connector = Connector.objects.select_for_update().get(pk=connector_id)
        return _apply(connector, user, {"config": {**connector.config, "tools": tools}}, reason)
