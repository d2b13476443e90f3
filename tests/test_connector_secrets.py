"""Credential references resolve to values, and no error or display ever shows a value."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.adapters.base import PermanentError
from connectors.secrets import MissingSecret, mask, resolve_secret, resolve_secrets

SECRET = "sk-live-4eC39HqLyjWDarjtT1zdp7dc"


def test_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITL_TEST_TOKEN", SECRET)
    assert resolve_secret("env:HITL_TEST_TOKEN") == SECRET


def test_file_reference_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {SECRET}\n")
    assert resolve_secret(f"file:{path}") == SECRET


def test_missing_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HITL_TEST_ABSENT", raising=False)
    with pytest.raises(MissingSecret, match="HITL_TEST_ABSENT"):
        resolve_secret("env:HITL_TEST_ABSENT")


def test_missing_secret_is_a_permanent_connector_error() -> None:
    assert issubclass(MissingSecret, PermanentError)


def test_missing_or_empty_file(tmp_path: Path) -> None:
    with pytest.raises(MissingSecret, match="cannot be read"):
        resolve_secret(f"file:{tmp_path / 'absent'}")
    empty = tmp_path / "empty"
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
    monkeypatch.setenv("HITL_TEST_TOKEN", SECRET)
    assert resolve_secrets({"token": "env:HITL_TEST_TOKEN"}) == {"token": SECRET}
    with pytest.raises(ValueError, match="credential 'api_token'") as info:
        resolve_secrets({"api_token": SECRET})
    assert SECRET not in str(info.value)


def test_mask() -> None:
    assert mask(SECRET) == "••••p7dc"
    assert mask("abcdefghijkl") == "••••ijkl"
    assert mask("short-secret"[:11]) == "••••••••"
    assert mask("") == "" and mask(None) == ""
