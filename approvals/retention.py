"""Retention: after EVIDENCE_RETENTION_DAYS, a closed proposal's evidence payload is purged.

The payload is what the agent sent to justify the change (rationale, context, evidence excerpts):
it is blanked on the proposal and on every one of its history rows. The decision record stays
(who, what, when, which rule, the change and its hashes), and so does the decision log: each
history row's digest keeps its payload apart (ledger.chain.register_payload), and the purge is
itself an event listing the purged rows and their new payload digests, so `verify_audit` still
passes, and fails if a purged payload is put back or changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from approvals.models import OPEN_STATUSES, Proposal
from ledger import capture
from ledger.chain import history_digests

BATCH = 500
PURGED = {"rationale": "", "context": {}, "evidence": []}


@dataclass(frozen=True)
class PurgeResult:
    proposals: int
    history_rows: int


def purge_evidence(now: datetime | None = None) -> PurgeResult:
    """Purge every due proposal's payload, BATCH proposals per transaction (and log event)."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.EVIDENCE_RETENTION_DAYS)
    due = (Proposal.objects.filter(created_at__lt=cutoff).exclude(status__in=OPEN_STATUSES)
           .exclude(rationale="", context={}, evidence=[]).order_by("created_at"))
    proposals = rows = 0
    while ids := list(due.values_list("pk", flat=True)[:BATCH]):
        rows += _purge(ids, cutoff)
        proposals += len(ids)
    return PurgeResult(proposals, rows)


def _purge(ids: list, cutoff: datetime) -> int:
    history = Proposal.history.model.objects.filter(id__in=ids)
    with transaction.atomic(durable=True):
        Proposal.objects.filter(pk__in=ids).update(**PURGED)
        count = history.update(**PURGED)
        purged = [["approvals.historicalproposal", row.pk, history_digests(row)["payload"]] for row in history.order_by("pk")]
        capture.add_records(
            [{"model": "approvals.proposal", "op": "evidence purged", "ids": [str(pk) for pk in ids], "purged": purged}],
            f"evidence purged: retention of {settings.EVIDENCE_RETENTION_DAYS} days (submitted before {cutoff.isoformat()})",
        )
    return count
