"""Text no database can keep (NUL) in an admin form the product's own views read: a 400 naming the
field, and nothing stored, on every backend (PostgreSQL refuses NUL outright: it was a 500 there)."""

from __future__ import annotations

from django.test import Client

from approvals import operations
from approvals.models import BreakGlass, Status
from tests.conftest import reload


def big_refund(submit):
    return submit("nul-big", amount="1500.00", changes={"status": "refunded", "refund_amount": "1500.00"})


def test_a_nul_in_a_reason_posted_to_the_admin_is_a_400_naming_the_field(submit, people):
    proposal = big_refund(submit)
    reviewer = Client()
    reviewer.force_login(people.finance1)

    response = reviewer.post(f"/admin/approvals/proposal/{proposal.pk}/decide/", {"verdict": "reject", "reason": "no\x00pe"})

    assert response.status_code == 400 and "reason" in response.content.decode()
    assert reload(proposal).status == Status.PENDING_REVIEW and not proposal.reviews.exists()


def test_a_nul_in_a_break_glass_confirmation_stores_nothing(submit, people):
    proposal = big_refund(submit)
    operations.take_over(proposal.pk, people.operator)
    operations.handle_manually(proposal.pk, people.operator, "refunded by phone")
    colleague = Client()
    colleague.force_login(people.make("operator2", "operators"))

    response = colleague.post(f"/admin/approvals/proposal/{proposal.pk}/operate/",
                              {"op": "confirm_manual", "reason": "seen\x00"})

    assert response.status_code == 400 and "reason" in response.content.decode()
    assert reload(proposal).status == Status.PENDING_REVIEW and not BreakGlass.objects.exists()
