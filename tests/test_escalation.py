"""Reviews that miss their SLA escalate: the escalation group may then decide as well."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from approvals import services
from approvals.models import ReviewTask, Status
from approvals.tasks import sweep_overdue_reviews
from tests.conftest import matrix_spec, proposal_body, reload, rule, tier


@pytest.fixture
def waiting(publish, sandbox, make_client, people):
    people.make("head-of-finance", "finance-leads")
    publish(matrix_spec(rule("refunds", "review", actions=["refund"],
                             tiers=(tier("finance", sla_minutes=60, escalation_group="finance-leads"),))))
    data = proposal_body(amount=Decimal("120.00"))
    proposal, _ = services.submit_proposal(make_client("refund-bot-integration").integration, data)
    return proposal


def miss_the_sla(proposal) -> None:
    ReviewTask.objects.filter(proposal=proposal).update(due_at=timezone.now() - timedelta(minutes=1))


def test_a_review_within_its_sla_is_not_escalated(waiting):
    assert services.escalate_overdue() == 0
    assert services.active_task(waiting).escalated_at is None


def test_the_escalation_group_cannot_decide_before_the_sla_is_missed(waiting, people):
    from django.contrib.auth import get_user_model

    lead = get_user_model().objects.get(username="head-of-finance")
    with pytest.raises(PermissionDenied):
        services.record_verdict(waiting.pk, lead, "approve")


def test_a_missed_sla_escalates_once_and_the_escalation_group_may_approve(waiting, people):
    from django.contrib.auth import get_user_model

    miss_the_sla(waiting)

    assert sweep_overdue_reviews() == {"escalated": 1, "expired": 0, "dispatched": 0, "unstarted": 0, "resumed": 0, "requeued": 0}
    assert services.escalate_overdue() == 0  # once only
    task = services.active_task(waiting)
    assert task.escalated_at is not None
    assert "escalated to finance-leads" in task.history.first().history_change_reason

    lead = get_user_model().objects.get(username="head-of-finance")
    services.record_verdict(waiting.pk, lead, "approve", "finance is out today")
    assert reload(waiting).status in (Status.APPROVED, Status.EXECUTED)
