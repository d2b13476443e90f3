"""API-key authentication reads the key, its integration and the user it acts for in one statement written
once (approvals.api_auth.active_key), and finds exactly what the ORM's form of the same question finds."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.api_auth import active_key, create_api_key, hash_key
from approvals.models import ApiKey, Integration


def orm_key(hashed: str) -> ApiKey | None:
    return (ApiKey.objects.select_related("integration", "integration__acts_for")
            .filter(hashed_key=hashed, revoked_at__isnull=True, integration__active=True).first())


def same(found: ApiKey | None, expected: ApiKey | None) -> None:
    assert (found is None) == (expected is None)
    if found is None:
        return
    for a, b in ((found, expected), (found.integration, expected.integration)):
        fields = [f.attname for f in type(a)._meta.concrete_fields]
        assert [getattr(a, f) for f in fields] == [getattr(b, f) for f in fields]
    user, orm_user = found.integration.acts_for, expected.integration.acts_for
    assert (user and user.pk, user and user.get_username(), user and user.is_active) == \
        (orm_user and orm_user.pk, orm_user and orm_user.get_username(), orm_user and orm_user.is_active)


@pytest.fixture
def keys(db):
    """Raw keys: one acting for a person, one for nobody, a revoked one, one of an inactive integration."""
    person = get_user_model().objects.create_user("bot-owner", password="pw", is_staff=True)
    acting = Integration.objects.create(name="acting", acts_for=person)
    alone = Integration.objects.create(name="alone")
    asleep = Integration.objects.create(name="asleep", active=False)
    made = {name: create_api_key(integration, ["proposals:read"]) for name, integration in
            (("acting", acting), ("alone", alone), ("revoked", alone), ("asleep", asleep))}
    revoked = made["revoked"][0]
    revoked.revoked_at = timezone.now()
    revoked.save()
    made["acting"][0].last_used_at = timezone.now()
    made["acting"][0].save()
    return {name: raw for name, (_, raw) in made.items()}


def test_a_key_is_found_as_the_orm_finds_it_with_its_integration_and_user(keys):
    for name in ("acting", "alone", "revoked", "asleep"):
        same(active_key(hash_key(keys[name])), orm_key(hash_key(keys[name])))
    assert active_key(hash_key("hitl_no-such-key")) is None

    key = active_key(hash_key(keys["acting"]))
    assert key.integration.name == "acting" and key.integration.acts_for.get_username() == "bot-owner"
    assert timezone.is_aware(key.created_at) and timezone.is_aware(key.last_used_at) and key.integration.active is True
    assert active_key(hash_key(keys["alone"])).integration.acts_for is None
    assert active_key(hash_key(keys["revoked"])) is None and active_key(hash_key(keys["asleep"])) is None


def test_a_key_its_integration_and_its_user_take_one_statement(keys):
    with CaptureQueriesContext(connection) as captured:
        key = active_key(hash_key(keys["acting"]))
        assert (key.integration.name, key.integration.acts_for.get_username()) == ("acting", "bot-owner")
    assert len(captured) == 1


@pytest.mark.parametrize("raw", ["hitl_\x00key", "hitl_clé-ünïcode", "hitl_" + "x" * 10_000, "hitl_\ud800"])
def test_a_malformed_or_forged_key_is_refused_with_401_not_an_error(keys, raw):
    """NUL, non-ASCII, huge and unpaired-surrogate keys are hashed like any other and match no key."""
    response = Client().get("/api/v1/proposals/", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 401, response.content
