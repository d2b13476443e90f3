"""Four eyes hold: one person counts once per proposal, nobody approves their own edit, and closing
unapproved work by hand needs a second operator (tests/test_takeover.py covers the operator side)."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.test import Client

from approvals import services
from approvals.models import Review, Status
from tests.conftest import matrix_spec, reload, rule, tier


def uncertain_big_refund(submit):
    """The demo sends it to finance (two approvals) and then support."""
    return submit("uncertain-big", amount="2500.00", confidence=0.75,
                  changes={"status": "refunded", "refund_amount": "2500.00"})


def test_one_person_in_two_groups_clears_one_tier_only(submit, people):
    both = people.make("fin-and-support", "finance", "support")
    proposal = uncertain_big_refund(submit)
    assert [t.group.name for t in proposal.review_tasks.order_by("position")] == ["finance", "support"]

    services.record_verdict(proposal.pk, both, "approve")
    services.record_verdict(proposal.pk, people.finance2, "approve")
    assert services.active_task(reload(proposal)).group.name == "support"
    with pytest.raises(PermissionDenied, match="already approved this change on another tier"):
        services.record_verdict(proposal.pk, both, "approve")

    assert reload(proposal).status == Status.PENDING_REVIEW
    services.record_verdict(proposal.pk, people.support1, "approve")
    assert reload(proposal).status == Status.APPROVED


def test_a_person_who_approved_one_tier_may_still_reject_on_another(submit, people):
    """Refusing is never a bypass: only approvals must come from different people."""
    both = people.make("fin-and-support", "finance", "support")
    proposal = uncertain_big_refund(submit)
    services.record_verdict(proposal.pk, both, "approve")
    services.record_verdict(proposal.pk, people.finance2, "approve")

    services.record_verdict(proposal.pk, both, "reject", "second thoughts")

    assert reload(proposal).status == Status.REJECTED


def test_the_reviewer_who_edits_a_change_cannot_approve_it(submit, people):
    proposal = submit("edited", amount="500.00", changes={"status": "refunded", "refund_amount": "500.00"})
    assert services.active_task(proposal).group.name == "finance"

    services.record_verdict(proposal.pk, people.finance1, "approve", "only half",
                            changes={"status": "refunded", "refund_amount": "250.00"})

    proposal = reload(proposal)
    assert proposal.status == Status.PENDING_REVIEW and proposal.edited_by == people.finance1
    assert not Review.objects.filter(proposal=proposal).exists()
    with pytest.raises(PermissionDenied, match="edited this change"):
        services.record_verdict(proposal.pk, people.finance1, "approve")
    services.record_verdict(proposal.pk, people.finance2, "approve")
    assert reload(proposal).status == Status.APPROVED


def test_the_admin_offers_approve_only_to_those_who_may(submit, people):
    proposal = submit("edited-page", amount="500.00", changes={"status": "refunded", "refund_amount": "500.00"})
    services.record_verdict(proposal.pk, people.finance1, "approve", "only half",
                            changes={"status": "refunded", "refund_amount": "250.00"})
    editor, colleague = Client(), Client()
    editor.force_login(people.finance1)
    colleague.force_login(people.finance2)
    page = f"/admin/approvals/proposal/{proposal.pk}/change/"

    seen_by_editor = editor.get(page).content.decode()
    seen_by_colleague = colleague.get(page).content.decode()

    assert 'id="approve-button"' not in seen_by_editor and "edited this change" in seen_by_editor
    assert 'id="reject-button"' in seen_by_editor
    assert 'id="approve-button"' in seen_by_colleague


@pytest.mark.matrix(matrix_spec(rule("two-tiers", "review", actions=["refund"],
                                     tiers=(tier("finance"), tier("leads", mode="all")))))
def test_every_member_means_every_member_four_eyes_let_approve(submit, people):
    """A lead who approved the finance tier is not waited for on the all-leads tier: they may not approve twice."""
    both = people.make("finance-lead", "finance", "leads")
    other_lead = people.make("other-lead", "leads")
    proposal = submit("all-leads")

    services.record_verdict(proposal.pk, both, "approve")
    services.record_verdict(proposal.pk, other_lead, "approve")

    assert reload(proposal).status == Status.APPROVED
