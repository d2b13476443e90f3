"""Credential references resolve to values, only connector secrets can be referenced, and no error or
display ever shows a value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from django.core.exceptions import ValidationError
from django.urls import reverse

from connectors.adapters.base import PermanentError
from connectors.models import Connector
from connectors.secrets import MissingSecret, RefusedReference, mask, resolve_secret, resolve_secrets
from connectors.services import adapter_for, check_health

SECRET = "sk-live-4eC39HqLyjWDarjtT1zdp7dc"


@pytest.fixture(autouse=True)
def secrets_dir(settings, tmp_path: Path) -> Path:
    """The configured secrets directory: the only place file references may read."""
    directory = tmp_path / "secrets"
    directory.mkdir()
    settings.CREDENTIAL_FILE_DIR = directory
    settings.CREDENTIAL_ENV_PREFIX = "HITL_SECRET_"
    return directory


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_SECRET_TEST_TOKEN", SECRET)
    assert resolve_secret("env:HITL_SECRET_TEST_TOKEN") == SECRET


def test_file_reference_is_stripped(secrets_dir: Path) -> None:
    path = secrets_dir / "token"
    path.write_text(f"  {SECRET}\n")
    assert resolve_secret(f"file:{path}") == SECRET
    assert resolve_secret("file:token") == SECRET  # relative to the secrets directory


def test_missing_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HITL_SECRET_ABSENT", raising=False)
    with pytest.raises(MissingSecret, match="HITL_SECRET_ABSENT"):
        resolve_secret("env:HITL_SECRET_ABSENT")


def test_missing_secret_is_a_permanent_connector_error() -> None:
    assert issubclass(MissingSecret, PermanentError)


def test_missing_or_empty_file(secrets_dir: Path) -> None:
    with pytest.raises(MissingSecret, match="cannot be read"):
        resolve_secret(f"file:{secrets_dir / 'absent'}")
    empty = secrets_dir / "empty"
    empty.write_text("\n")
    with pytest.raises(MissingSecret, match="empty"):
        resolve_secret(f"file:{empty}")


@pytest.mark.parametrize("ref", [SECRET, "vault:kv/sf", "env:", "file:", ""])
def test_bad_reference_names_the_forms_and_never_echoes_it(ref: str) -> None:
    with pytest.raises(ValueError, match='"env:NAME" or "file:/path') as info:
        resolve_secret(ref)
    assert not isinstance(info.value, PermanentError)
    if len(ref) > 6:
        assert ref not in str(info.value)


def test_resolve_secrets_names_the_bad_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_SECRET_TEST_TOKEN", SECRET)
    assert resolve_secrets({"token": "env:HITL_SECRET_TEST_TOKEN"}) == {"token": SECRET}
    with pytest.raises(ValueError, match="credential 'api_token'") as info:
        resolve_secrets({"api_token": SECRET})
    assert SECRET not in str(info.value)


def test_mask() -> None:
    assert mask(SECRET) == "••••p7dc"
    assert mask("abcdefghijkl") == "••••ijkl"
    assert mask("short-secret"[:11]) == "••••••••"
    assert mask("") == "" and mask(None) == ""


# ---- references reach connector secrets only ---------------------------------------------------

@pytest.mark.parametrize("name", ["SECRET_KEY", "DATABASE_URL", "PATH", "HITL_SECRETX", "hitl_secret_token"])
def test_an_env_reference_outside_the_prefix_is_refused_at_use(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, SECRET)
    with pytest.raises(RefusedReference, match="must start with HITL_SECRET_") as info:
        resolve_secret(f"env:{name}")
    assert SECRET not in str(info.value)


def test_the_prefix_is_configurable(monkeypatch: pytest.MonkeyPatch, settings) -> None:
    settings.CREDENTIAL_ENV_PREFIX = "ACME_VAULT_"
    monkeypatch.setenv("ACME_VAULT_TOKEN", SECRET)
    assert resolve_secret("env:ACME_VAULT_TOKEN") == SECRET
    with pytest.raises(RefusedReference):
        resolve_secret("env:HITL_SECRET_TOKEN")


@pytest.mark.parametrize("where", ["/etc/passwd", "../outside", "nested/../../outside", "/proc/self/environ", "."])
def test_a_file_reference_outside_the_secrets_directory_is_refused_at_use(secrets_dir: Path, where: str) -> None:
    (secrets_dir.parent / "outside").write_text(SECRET)
    with pytest.raises(RefusedReference, match="outside the secrets directory") as info:
        resolve_secret(f"file:{where}")
    assert SECRET not in str(info.value)


def test_a_symlink_out_of_the_secrets_directory_is_refused(secrets_dir: Path) -> None:
    (secrets_dir.parent / "outside").write_text(SECRET)
    (secrets_dir / "innocent").symlink_to(secrets_dir.parent / "outside")
    with pytest.raises(RefusedReference, match="outside the secrets directory"):
        resolve_secret("file:innocent")


def test_a_symlink_within_the_secrets_directory_is_followed(secrets_dir: Path) -> None:
    (secrets_dir / "v2").mkdir()
    (secrets_dir / "v2" / "token").write_text(SECRET)
    (secrets_dir / "token").symlink_to(secrets_dir / "v2" / "token")  # how Kubernetes mounts secrets
    assert resolve_secret("file:token") == SECRET


def test_a_connector_naming_another_secret_cannot_be_saved(db) -> None:
    with pytest.raises(ValidationError) as info:
        Connector.objects.create(slug="leaky", name="Leaky", kind="rest", config={"base_url": "https://93.184.215.14"},
                                 credentials={"token": "env:SECRET_KEY", "extra": "file:/etc/passwd"})
    messages = info.value.message_dict["credentials"]
    assert any("token: environment variable SECRET_KEY" in m for m in messages)
    assert any("extra: secret file /etc/passwd is outside" in m for m in messages)
    assert not Connector.objects.filter(slug="leaky").exists()


def connector_form(base_url: str = "https://93.184.215.14", **credentials: str) -> dict:
    """The admin's add form as an operator fills it in (an address literal: resolving it sends nothing)."""
    return {"slug": "leaky", "name": "Leaky", "kind": "rest", "enabled": "on",
            "config": json.dumps({"base_url": base_url}), "credentials": json.dumps(credentials),
            "reason": "billing system for refunds"}


@pytest.mark.parametrize(("reference", "message"), [
    ("env:SECRET_KEY", "token: environment variable SECRET_KEY is not a connector secret"),
    ("file:/etc/passwd", "token: secret file /etc/passwd is outside the secrets directory"),
])
def test_the_admin_refuses_a_connector_naming_another_secret(admin_client, reference: str, message: str) -> None:
    response = admin_client.post(reverse("admin:connectors_connector_add"), connector_form(token=reference))

    assert response.status_code == 200  # the form again, with the error
    assert message in response.content.decode()
    assert not Connector.objects.filter(slug="leaky").exists()


def test_the_admin_saves_a_connector_naming_a_connector_secret(admin_client) -> None:
    response = admin_client.post(reverse("admin:connectors_connector_add"), connector_form(token="env:HITL_SECRET_BILLING"))

    assert response.status_code == 302
    assert Connector.objects.get(slug="leaky").credentials == {"token": "env:HITL_SECRET_BILLING"}


def test_the_admin_refuses_a_base_url_at_a_private_address(admin_client, settings) -> None:
    settings.OUTBOUND_ALLOWLIST = ""
    response = admin_client.post(reverse("admin:connectors_connector_add"),
                                 connector_form(base_url="http://169.254.169.254", token="env:HITL_SECRET_BILLING"))

    assert response.status_code == 200
    assert "base_url: 169.254.169.254 resolves to 169.254.169.254, a link-local address" in response.content.decode()
    assert not Connector.objects.filter(slug="leaky").exists()


def test_a_stored_connector_naming_another_secret_is_refused_when_used(db, monkeypatch: pytest.MonkeyPatch) -> None:
    """Written before this check (or past it): the adapter is never built with the value."""
    monkeypatch.setenv("SECRET_KEY", SECRET)
    connector = Connector.objects.create(slug="billing", name="Billing", kind="rest",
                                         config={"base_url": "https://93.184.215.14"})
    Connector.objects.filter(pk=connector.pk).update(credentials={"token": "env:SECRET_KEY"})
    connector.refresh_from_db()

    with pytest.raises(RefusedReference):
        adapter_for(connector)
    health = check_health(connector)
    assert not health.ok and "SECRET_KEY is not a connector secret" in health.detail and SECRET not in health.detail
