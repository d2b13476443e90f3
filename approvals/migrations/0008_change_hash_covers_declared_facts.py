"""The change hash now covers the declared facts the policy weighed (agent, amount, currency, confidence,
customer impact, what was supplied), not only the planned change. Recompute it for every stored
proposal and carry approvals and verdicts over, so work approved before this release still runs.

The hash is written out here as it stood at this release: a later change to approvals.facts must not
change what this migration did.
"""

import hashlib
import json
from decimal import Decimal

from django.db import migrations


def _present(p) -> list[str]:
    supplied = {
        "target": bool(p.target_id), "changes": bool(p.changes), "amount": p.amount is not None,
        "currency": bool(p.currency), "evidence": bool(p.evidence), "rationale": bool((p.rationale or "").strip()),
    }
    return sorted(name for name, given in supplied.items() if given)


def _hash(p) -> str:
    planned = {
        "connector": p.connector_id, "action": p.action, "target": [p.target_type, p.target_id], "changes": p.changes,
        "agent": p.agent, "amount": None if p.amount is None else str(Decimal(p.amount).quantize(Decimal("0.01"))),
        "currency": p.currency, "confidence": p.confidence, "customer_impact": p.customer_impact,
        "present": _present(p),
    }
    return hashlib.sha256(json.dumps(planned, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def rehash(apps, schema_editor):
    Proposal = apps.get_model("approvals", "Proposal")
    Review = apps.get_model("approvals", "Review")
    for proposal in Proposal.objects.all().iterator(chunk_size=500):
        old, new = proposal.change_hash, _hash(proposal)
        if old == new:
            continue
        approved = new if proposal.approved_hash and proposal.approved_hash == old else proposal.approved_hash
        Proposal.objects.filter(pk=proposal.pk).update(change_hash=new, approved_hash=approved)
        Review.objects.filter(proposal_id=proposal.pk, change_hash=old).update(change_hash=new)


class Migration(migrations.Migration):
    dependencies = [("approvals", "0007_rate_window")]

    operations = [migrations.RunPython(rehash, migrations.RunPython.noop)]
