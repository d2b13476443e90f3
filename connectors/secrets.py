"""Credential references: the database stores where a secret lives, never the secret.

A connector's credentials map names to references, "env:NAME" (an environment variable)
or "file:/path" (a file, e.g. a mounted Docker/Kubernetes secret). Errors name the
reference so the operator can fix it, and never echo a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from connectors.adapters.base import PermanentError

DOT = "•"


class MissingSecret(PermanentError):
    """The reference is well-formed but points at nothing (unset variable, missing file)."""


def resolve_secret(ref: str) -> str:
    """Return the secret a reference points at."""
    scheme, _, where = str(ref).partition(":")
    if scheme == "env" and where:
        value = os.environ.get(where)
        if not value:
            raise MissingSecret(f"environment variable {where} (from {ref!r}) is not set or empty")
        return value
    if scheme == "file" and where:
        try:
            value = Path(where).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise MissingSecret(f"secret file {where} cannot be read ({exc.__class__.__name__})") from None
        if not value:
            raise MissingSecret(f"secret file {where} is empty")
        return value
    # Never echo the reference itself: a secret pasted in place of a reference must not leak.
    scheme_note = f" (unknown scheme {scheme!r})" if where and scheme.isalpha() and len(scheme) <= 10 else ""
    raise ValueError(f'a secret reference must look like "env:NAME" or "file:/path/to/secret"{scheme_note}')


def is_reference(ref: object) -> bool:
    """Whether a credential value is a reference (env:NAME, file:/path) rather than a pasted secret."""
    scheme, _, where = str(ref).partition(":") if isinstance(ref, str) else ("", "", "")
    return (scheme == "env" and where.replace("_", "").isalnum()) or (scheme == "file" and where.startswith("/"))


def resolve_secrets(refs: Mapping[str, str]) -> dict[str, str]:
    """Resolve a connector's whole credentials mapping (name -> reference)."""
    resolved = {}
    for name, ref in refs.items():
        try:
            resolved[name] = resolve_secret(ref)
        except ValueError as exc:
            raise ValueError(f"credential {name!r}: {exc}") from None
    return resolved


def mask(value: str | None) -> str:
    """For display: the last four characters of a long secret, nothing of a short one."""
    if not value:
        return ""
    return DOT * 4 + value[-4:] if len(value) >= 12 else DOT * 8
