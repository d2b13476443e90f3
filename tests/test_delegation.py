"""Out-of-office delegation: an away reviewer's tiers route to a delegate allowed to decide for the group."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client
from django.utils import timezone

from approvals import delegation, operations, services
from approvals.models import Delegation, Status
from tests.conftest import matrix_spec, reload, rule, tier

EVERY_FINANCE_MEMBER = matrix_spec(
    rule("refunds", "review", actions=["refund"], tiers=(tier("finance", mode="all"),)),
)
pytestmark = pytest.mark.matrix(EVERY_FINANCE_MEMBER)


def away_this_week(person, delegate):
    now = timezone.now()
    return delegation.set_delegation(person, delegate, now - timedelta(hours=1), now + timedelta(days=5), "holiday", by=person)


def test_an_all_members_tier_waits_for_the_delegate_instead_of_the_away_member(submit, people):
    finance3 = people.make("finance3", "finance")
    away_this_week(people.finance1, people.finance2)
    proposal = submit(amount=Decimal("120.00"))
    task = services.active_task(proposal)

    assert delegation.reviewers(task) == sorted([people.finance2.pk, finance3.pk])
    services.record_verdict(proposal.pk, people.finance2, "approve")
    assert reload(proposal).status == Status.PENDING_REVIEW
    services.record_verdict(proposal.pk, finance3, "approve")
    assert reload(proposal).status in (Status.APPROVED, Status.EXECUTED)  # finance1, on holiday, was not waited for


def test_the_thread_records_whom_the_delegate_stood_in_for(submit, people):
    away_this_week(people.finance1, people.finance2)
    proposal = submit(amount=Decimal("120.00"))

    services.record_verdict(proposal.pk, people.finance2, "approve", "covering for finance1")

    (review,) = reload(proposal).reviews.all()
    assert review.on_behalf_of == people.finance1
    texts = [event.text for event in operations.thread(proposal)]
    assert any("approve on tier 1 (finance) via admin for finance1 (out of office)" in text for text in texts)


def test_a_delegation_outside_its_period_routes_nothing(submit, people):
    later = timezone.now() + timedelta(days=3)
    delegation.set_delegation(people.finance1, people.finance2, later, later + timedelta(days=1), by=people.finance1)
    proposal = submit(amount=Decimal("120.00"))

    assert delegation.reviewers(services.active_task(proposal)) == sorted([people.finance1.pk, people.finance2.pk])
    assert delegation.reviewers(services.active_task(proposal), now=later + timedelta(hours=1)) == [people.finance2.pk]


def test_a_delegate_outside_the_group_is_refused_when_set_and_when_deciding(submit, people):
    with pytest.raises(ValidationError, match="must be allowed to decide for that group"):
        away_this_week(people.finance1, people.support1)
    with pytest.raises(PermissionDenied):
        delegation.set_delegation(people.finance1, people.finance2, timezone.now(), timezone.now() + timedelta(days=1),
                                  by=people.support1)
    assert not Delegation.objects.exists()

    # A delegate who shares one group stands in there only: a finance tier never routes to support.
    people.finance1.groups.add(people.support1.groups.get())
    away_this_week(people.finance1, people.support1)
    proposal = submit(amount=Decimal("120.00"))
    task = services.active_task(proposal)
    assert delegation.stand_ins(task) == {}
    with pytest.raises(PermissionDenied):
        services.record_verdict(proposal.pk, people.support1, "approve")


def test_a_reviewer_sets_their_delegate_in_the_admin_and_a_refusal_shows_on_the_form(people):
    browser = Client()
    browser.force_login(people.finance1)
    now = timezone.now()
    form = {"delegator": people.finance1.pk, "starts_at_0": f"{now:%Y-%m-%d}", "starts_at_1": "00:00:00",
            "ends_at_0": f"{now + timedelta(days=3):%Y-%m-%d}", "ends_at_1": "00:00:00", "reason": "holiday"}

    refused = browser.post("/admin/approvals/delegation/add/", {**form, "delegate": people.support1.pk})
    assert refused.status_code == 200 and b"must be allowed to decide for that group" in refused.content
    assert not Delegation.objects.exists()

    saved = browser.post("/admin/approvals/delegation/add/", {**form, "delegate": people.finance2.pk})
    assert saved.status_code == 302
    (made,) = Delegation.objects.all()
    assert (made.delegator, made.delegate, made.created_by) == (people.finance1, people.finance2, people.finance1)
    assert "finance1 away: finance to finance2" in made.history.get().history_change_reason
