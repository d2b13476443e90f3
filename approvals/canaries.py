"""Canary proposals: known-bad actions a governance board plants in a review queue to see whether
reviewers catch them.

A canary looks to its reviewers exactly like the agent's own work: same integration, agent,
connector and action, a real preview of the live record, the live policy's decision and tiers.
Only `Proposal.canary` differs, and reviewers are never shown it. The lifecycle refuses to execute
a canary (`lifecycle.enqueue_execution` closes an approved one instead; the executor refuses one
anyway), so a missed canary never reaches a system of record. A reviewer who rejects it caught
it; one who approves it missed it (`approvals.board.reviewer_oversight` counts both).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from approvals import lifecycle
from approvals.models import CanaryPlant, Integration, Proposal
from connectors.models import Connector
from connectors.services import supported_actions
from policies.services import is_board_member

CANARY_FIELDS = ("agent", "action", "changes", "amount", "currency", "confidence", "customer_impact", "rationale", "evidence")


def may_plant(user) -> bool:
    return bool(user and user.is_active and (user.is_superuser or is_board_member(user)))


def plant_canary(user, integration: Integration, connector: Connector, data: dict[str, Any], note: str = "") -> Proposal:
    """Plant one canary in the queue the live policy routes it to. Refused (nothing stored) when the
    policy would not put it before reviewers: a blocked or held canary tests nobody."""
    if not may_plant(user):
        raise PermissionDenied("only governance board members plant canaries")
    if data.get("action") not in supported_actions(connector):
        raise ValidationError({"action": f"{connector.slug} offers {', '.join(supported_actions(connector))}"})
    target = data.get("target") or {}
    proposal = Proposal(
        integration=integration, connector=connector, canary=True,
        # Shaped like an agent's own key, so nothing on the decision page gives the canary away.
        idempotency_key=f"{data['agent']}:{target.get('id', '')}:{data['action']}:{uuid.uuid4().hex[:8]}",
        request_hash=uuid.uuid4().hex + uuid.uuid4().hex,
        target_type=target.get("type", ""), target_id=target.get("id", ""),
        **{name: data[name] for name in CANARY_FIELDS if data.get(name) is not None},
    )
    if proposal.amount is not None:
        proposal.amount = Decimal(str(proposal.amount))
    live = lifecycle.read_live(proposal)  # a read of the system of record, never a write
    with transaction.atomic(durable=True):
        lifecycle.apply_preview(proposal, live)
        # Decided exactly as the agent's own proposal would be (no "review at least" nudge, whose reason
        # would show on the page): a canary the policy would not put before reviewers is refused.
        decision = lifecycle.decide(proposal)
        if decision["outcome"] != "review":
            raise ValidationError({"action": f"the live policy would {decision['outcome']} this, so no reviewer "
                                             f"would see it: {'; '.join(decision['reasons'])}"})
        # The proposal's own history reads like the agent's submission (reviewers see it); the
        # truth, who planted it, is the CanaryPlant row written in the same transaction.
        lifecycle.record(proposal, f"submitted by integration {integration.name}")
        lifecycle.route(proposal, decision)
        lifecycle.record(proposal, f"decided {proposal.outcome}: {proposal.status_reason}")
        lifecycle.after_routing(proposal)
        CanaryPlant.objects.create(proposal=proposal, planted_by=user, note=note)
    return proposal
