"""Bearer API keys: one integration per key, stored hashed, revocable, scoped, rate-limited."""

from __future__ import annotations

import functools
import hashlib
import math
import secrets
from datetime import timedelta

from django.contrib.auth.models import AnonymousUser
from django.db import connection, models
from django.utils import timezone
from rest_framework import exceptions, permissions, throttling
from rest_framework.authentication import BaseAuthentication
from rest_framework.settings import api_settings

from approvals import rate_limit
from approvals.models import SCOPES, ApiKey, Integration
from hitlgov import raw_rows

KEY_PREFIX = "hitl_"


def hash_key(raw: str) -> str:
    # surrogatepass: a forged key with an unpaired surrogate hashes to a key that does not exist (a 401), not a 500
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def create_api_key(integration: Integration, scopes: list[str], *, user=None, reason: str = "") -> tuple[ApiKey, str]:
    """Make a key and return it with the only copy of its secret, which is never stored.

    `user` and `reason`, when given, go into the key's history (see approvals.integrations.issue_key).
    """
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scopes {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(integration=integration, prefix=raw[:12], hashed_key=hash_key(raw), scopes=",".join(scopes))
    if user is not None:
        key._history_user = user
    if reason:
        key._change_reason = reason
    key.save()
    return key, raw


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise exceptions.AuthenticationFailed("use 'Authorization: Bearer <api key>'")
        key = active_key(hash_key(raw.strip()))
        if key is None:
            raise exceptions.AuthenticationFailed("unknown or revoked API key")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return (key.integration.acts_for or AnonymousUser(), key)

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="hitlgov"'


def active_key(hashed: str) -> ApiKey | None:
    """The unrevoked key of an active integration with this hash, its integration and the user it acts
    for loaded with it: what `ApiKey.objects.select_related("integration", "integration__acts_for")
    .filter(hashed_key=hashed, revoked_at__isnull=True, integration__active=True).first()` gives, in a
    statement written once per process. The ORM compiled that three-table join on every API request
    (about 0.8 ms of CPU, as much as the rest of authentication); tests/test_api_auth.py compares the two."""
    sql, tables = _key_statement(connection.vendor)
    with connection.cursor() as cursor:
        cursor.execute(sql, [hashed, True])
        row = cursor.fetchone()
    if row is None:
        return None
    key, integration, user = (raw_rows.instance(model, fields, row[start:start + len(fields)]) for model, fields, start in tables)
    integration.acts_for = user
    key.integration = integration
    return key


Table = tuple[type[models.Model], tuple[models.Field, ...], int]  # a model, its columns, where they start in the row


@functools.cache
def _key_statement(vendor: str) -> tuple[str, tuple[Table, ...]]:
    user_model = Integration._meta.get_field("acts_for").related_model
    quote, tables, columns, start = connection.ops.quote_name, [], [], 0
    for model, alias in ((ApiKey, "k"), (Integration, "i"), (user_model, "u")):
        fields = tuple(model._meta.concrete_fields)
        tables.append((model, fields, start))
        columns += [f"{alias}.{quote(field.column)}" for field in fields]
        start += len(fields)
    table = lambda model: quote(model._meta.db_table)  # noqa: E731
    sql = (f"SELECT {', '.join(columns)} FROM {table(ApiKey)} k INNER JOIN {table(Integration)} i ON i.id = k.integration_id"
           f" LEFT OUTER JOIN {table(user_model)} u ON u.id = i.acts_for_id"
           f" WHERE k.hashed_key = %s AND k.revoked_at IS NULL AND i.active = %s LIMIT 1")
    return sql, tuple(tables)


class HasScope(permissions.BasePermission):
    """Views name the scope each method needs in `required_scopes`; a key without it gets 403."""

    message = "this API key lacks the scope this call needs"

    def has_permission(self, request, view) -> bool:
        if not isinstance(request.auth, ApiKey):
            raise exceptions.NotAuthenticated("an API key is required: 'Authorization: Bearer <api key>'")
        needed = getattr(view, "required_scopes", {}).get(request.method)
        if needed and needed not in request.auth.scope_set:
            self.message = f"this API key lacks the scope {needed}"
            return False
        return True


class IntegrationRateThrottle(throttling.SimpleRateThrottle):
    """API_RATE_LIMIT calls per integration per fixed window, counted atomically in the database
    (approvals.rate_limit), so every web server and thread shares one exact count."""

    scope = "integration"

    def get_rate(self) -> str | None:
        # Read per request, not frozen at import as SimpleRateThrottle does, so a changed setting applies.
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def get_cache_key(self, request, view) -> str:
        if isinstance(request.auth, ApiKey):
            return f"integration:{request.auth.integration_id}"
        return f"ip:{self.get_ident(request)}"[:100]

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        now = timezone.now()
        start = rate_limit.window_start(now, self.duration)
        if rate_limit.hit(self.get_cache_key(request, view), start, self.duration) <= self.num_requests:
            return True
        self.retry_after = max(1, math.ceil((rate_limit.window_end(start, self.duration) - now).total_seconds()))
        return False

    def wait(self) -> float | None:
        return getattr(self, "retry_after", None)
