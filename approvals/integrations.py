"""Changing integrations and their API keys: who may, and with who and why in the history.

The admin (and anything else) goes through these functions. `acts_for` lends an integration a
person's review rights, so it is checked like any other grant; keys are issued and revoked
here, and a revoked key stays revoked (issue a new one instead).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from approvals.api_auth import create_api_key
from approvals.models import ApiKey, Integration

EDITABLE_FIELDS = frozenset({"name", "description", "acts_for", "active"})


def _require(user, codename: str) -> None:
    if not (user and user.is_active and user.has_perm(f"approvals.{codename}")):
        raise PermissionDenied(f"this needs the approvals.{codename} permission")


def _reason(reason: str) -> str:
    if not reason.strip():
        raise ValidationError({"reason": "say why: it is kept in the history"})
    return reason.strip()


def _apply(integration: Integration, user, fields: Mapping[str, Any], reason: str) -> Integration:
    unknown = sorted(set(fields) - EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({name: "cannot be set on an integration" for name in unknown})
    acts_for = fields.get("acts_for")
    if acts_for is not None and not acts_for.is_active:
        raise ValidationError({"acts_for": f"{acts_for.get_username()} is not an active user"})
    for name, value in fields.items():
        setattr(integration, name, value)
    integration.full_clean()
    integration._history_user, integration._change_reason = user, _reason(reason)
    integration.save()
    return integration


@transaction.atomic
def create_integration(user, fields: Mapping[str, Any], reason: str) -> Integration:
    """A new agent identity; it has no key until one is issued."""
    _require(user, "add_integration")
    return _apply(Integration(), user, fields, reason)


@transaction.atomic
def update_integration(integration_id: int, user, fields: Mapping[str, Any], reason: str) -> Integration:
    """Rename, describe, (de)activate, or point `acts_for` at another person."""
    _require(user, "change_integration")
    integration = Integration.objects.select_for_update().get(pk=integration_id)
    return _apply(integration, user, fields, reason)


@transaction.atomic
def issue_key(integration_id: int, user, scopes: Iterable[str]) -> tuple[ApiKey, str]:
    """A new key for an active integration; the raw secret is returned once and never stored."""
    _require(user, "add_apikey")
    integration = Integration.objects.select_for_update().get(pk=integration_id)
    if not integration.active:
        raise ValidationError({"integration": f"{integration.name} is inactive: activate it before issuing keys"})
    try:
        return create_api_key(integration, list(scopes), user=user, reason=f"issued by {user.get_username()}")
    except ValueError as exc:  # unknown scopes
        raise ValidationError({"scopes": str(exc)}) from None


@transaction.atomic
def revoke_key(key_id: int, user, reason: str) -> ApiKey:
    """Revoke a key now; revoking twice keeps the first time."""
    _require(user, "change_apikey")
    key = ApiKey.objects.select_for_update().get(pk=key_id)
    if key.revoked_at is not None:
        return key
    key.revoked_at = timezone.now()
    key._history_user, key._change_reason = user, _reason(reason)
    key.save(update_fields=["revoked_at"])
    return key
