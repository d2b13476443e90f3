"""Credential references: the database stores where a secret lives, never the secret.

A connector's credentials map names to references, "env:NAME" (an environment variable)
or "file:/path" (a file, e.g. a mounted Docker/Kubernetes secret). Errors name the
reference so the operator can fix it, and never echo a value.

A reference may only reach what is meant to be a connector secret: environment variables
whose name starts with CREDENTIAL_ENV_PREFIX (default HITL_SECRET_), so `env:SECRET_KEY` or
`env:DATABASE_URL` cannot be sent to a vendor as a token, and files inside
CREDENTIAL_FILE_DIR (symlinks and `..` resolved first), so `file:/etc/passwd` cannot either.
References are checked when a connector is saved and again whenever one is resolved.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from django.conf import settings

from connectors.adapters.base import PermanentError

DOT = "•"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FORMS = '"env:NAME" or "file:/path/to/secret"'


class MissingSecret(PermanentError):
    """The reference is well-formed but points at nothing (unset variable, missing file)."""


class RefusedReference(PermanentError):
    """The reference points outside what connectors may read (another variable, a file elsewhere)."""


def env_prefix() -> str:
    return str(getattr(settings, "CREDENTIAL_ENV_PREFIX", "HITL_SECRET_"))


def file_dir() -> Path:
    return Path(getattr(settings, "CREDENTIAL_FILE_DIR", "/run/secrets")).resolve()


def reference_problem(ref: object) -> str:
    """Why this reference may not be used, or ''. Never echoes a reference that does not look like one."""
    try:
        scheme, where = _parse(ref)
    except ValueError as exc:
        return str(exc)
    return _scope_problem(scheme, where)


def _parse(ref: object) -> tuple[str, str]:
    scheme, _, where = str(ref).partition(":")
    if scheme in ("env", "file") and where:
        return scheme, where
    # Never echo the reference itself: a secret pasted in place of a reference must not leak.
    scheme_note = f" (unknown scheme {scheme!r})" if where and scheme.isalpha() and len(scheme) <= 10 else ""
    raise ValueError(f"a secret reference must look like {FORMS}{scheme_note}")


def _scope_problem(scheme: str, where: str) -> str:
    if scheme == "env":
        if not _ENV_NAME.match(where):
            return f"{where!r} is not an environment variable name"
        if not where.startswith(env_prefix()):
            return f"environment variable {where} is not a connector secret: names must start with {env_prefix()}"
        return ""
    if _secret_path(where) is None:
        return f"secret file {where} is outside the secrets directory {file_dir()} (CREDENTIAL_FILE_DIR)"
    return ""


def _secret_path(where: str) -> Path | None:
    """The real path of a file reference (relative ones are inside the directory), or None if it is outside."""
    base = file_dir()
    try:
        path = (base / where).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        return None
    return path if path.is_relative_to(base) and path != base else None


def resolve_secret(ref: str) -> str:
    """Return the secret a reference points at."""
    scheme, where = _parse(ref)
    problem = _scope_problem(scheme, where)
    if problem:
        raise RefusedReference(problem)
    if scheme == "env":
        value = os.environ.get(where)
        if not value:
            raise MissingSecret(f"environment variable {where} (from {ref!r}) is not set or empty")
        return value
    path = _secret_path(where)  # the checked, resolved path is the one read
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise MissingSecret(f"secret file {where} cannot be read ({exc.__class__.__name__})") from None
    if not value:
        raise MissingSecret(f"secret file {where} is empty")
    return value


def credential_problems(refs: object) -> dict[str, str]:
    """Each credential whose reference may not be used, with why: for validating a connector before it is saved."""
    if not isinstance(refs, Mapping):
        return {"credentials": 'must map each secret name to a reference, e.g. {"token": "env:HITL_SECRET_TOKEN"}'}
    return {str(name): problem for name, ref in refs.items() if (problem := reference_problem(ref))}


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
