"""Setting up where review groups hear of their work: channels and Slack identities, with who and why.

The admin saves through these, like connectors' settings through connectors.services.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import validate_email
from django.db import models, transaction

from approvals.models import NotificationChannel, SlackIdentity
from connectors.secrets import reference_problem

CHANNEL_FIELDS = ("group", "kind", "emails", "slack_channel", "secret_ref", "active")
IDENTITY_FIELDS = ("slack_user_id", "user")


def channel_problems(channel: NotificationChannel) -> dict[str, str]:
    """What makes a channel unusable, field by field (nothing secret is echoed)."""
    kind = NotificationChannel.Kind
    if channel.kind == kind.EMAIL:
        if not channel.addresses:
            return {"emails": "an email channel needs at least one address"}
        bad = []
        for address in channel.addresses:
            try:
                validate_email(address)
            except ValidationError:
                bad.append(address)
        return {"emails": f"not email addresses: {', '.join(bad)}"} if bad else {}
    problems = {}
    if channel.kind == kind.SLACK and not channel.slack_channel.strip():
        problems["slack_channel"] = "a Slack channel needs its channel ID (e.g. C0123456)"
    if problem := reference_problem(channel.secret_ref):
        what = "the bot token" if channel.kind == kind.SLACK else "the webhook URL"
        problems["secret_ref"] = f"{what}: {problem}"
    return problems


def save_channel(channel_id: int | None, user, fields: Mapping[str, Any], reason: str) -> NotificationChannel:
    """Create (channel_id None) or change a group's channel; refused without the permission or a reason."""
    return _save(NotificationChannel, channel_id, user, fields, reason, CHANNEL_FIELDS, channel_problems)


def save_slack_identity(identity_id: int | None, user, fields: Mapping[str, Any], reason: str) -> SlackIdentity:
    """Map a Slack user to a product user (create or change), with who and why."""
    return _save(SlackIdentity, identity_id, user, fields, reason, IDENTITY_FIELDS, lambda identity: {})


def _save(model: type[models.Model], pk: int | None, user, fields: Mapping[str, Any], reason: str,
          allowed: tuple[str, ...], problems) -> Any:
    action = "add" if pk is None else "change"
    if not user.has_perm(f"approvals.{action}_{model._meta.model_name}"):
        raise PermissionDenied(f"{user.get_username()} may not {action} {model._meta.verbose_name_plural}")
    if not reason.strip():
        raise ValidationError({"reason": "say why: it is kept in the history"})
    with transaction.atomic():  # not durable: the admin's change view already holds a transaction
        obj = model() if pk is None else model.objects.select_for_update().get(pk=pk)
        for name, value in fields.items():
            if name in allowed:
                setattr(obj, name, value)
        if found := problems(obj):
            raise ValidationError(found)
        obj._history_user, obj._change_reason = user, reason
        obj.save()
    return obj
