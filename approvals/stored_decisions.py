"""Stored decisions as plain rows, for `policies.simulation` to replay (registered when the app starts)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime

from django.db.models import Q
from django.db.models.fields.json import KeyTransform

from approvals.models import Proposal


def select_rows(
    since: datetime | None = None, until: datetime | None = None, sample: int | None = None, seed: int | None = None,
) -> tuple[int, Iterator[tuple]]:
    """How many proposals, and an iterator over their rows: all in the period, or a random sample of them."""
    queryset = _proposals(since, until)
    if sample is None:
        return queryset.count(), _values(queryset).iterator(chunk_size=2000)
    ids = list(queryset.values_list("pk", flat=True))
    chosen = random.Random(seed).sample(ids, min(sample, len(ids)))
    return len(chosen), _chunked(queryset, chosen)


def _proposals(since: datetime | None, until: datetime | None):
    query = Q()
    if since is not None:
        query &= Q(created_at__gte=since)
    if until is not None:
        query &= Q(created_at__lt=until)
    return Proposal.objects.filter(query).order_by("created_at", "pk")


def _values(queryset):
    """Only what a replay needs: the stored decision's facts, tiers, rules and switches, not its trace."""
    return queryset.values_list(
        "pk", "outcome", "preview_error", KeyTransform("facts", "decision"), KeyTransform("tiers", "decision"),
        KeyTransform("rules", "decision"), KeyTransform("switches", "decision"), KeyTransform("outcome", "decision"),
        KeyTransform("sampled", "decision"),
    )


def _chunked(queryset, ids: list, size: int = 500) -> Iterator[tuple]:
    for start in range(0, len(ids), size):
        yield from _values(queryset.filter(pk__in=ids[start:start + size]))
