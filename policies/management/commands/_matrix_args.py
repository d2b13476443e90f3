"""Helpers the matrix commands share: finding a version, reading a file."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import CommandError

from policies.models import ApprovalMatrix


def matrix_version(version: str) -> ApprovalMatrix:
    """A stored version by number ("7" or "v7"), or "live" for the published one."""
    if version == "live":
        matrix = ApprovalMatrix.objects.filter(status="published").first()
        if matrix is None:
            raise CommandError("no matrix version is published")
        return matrix
    try:
        number = int(version.removeprefix("v"))
    except ValueError:
        raise CommandError(f"not a version number: {version!r} (e.g. 7, v7 or live)") from None
    try:
        return ApprovalMatrix.objects.get(version=number)
    except ApprovalMatrix.DoesNotExist:
        raise CommandError(f"no matrix version {number}") from None


def read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None
