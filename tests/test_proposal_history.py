"""Every transition of a proposal leaves a history row saying who and why."""

from approvals import services
from approvals.models import Proposal


def test_each_transition_is_recorded_with_who_and_why(submit, people):
    proposal = submit(amount="1500.00", changes={"status": "refunded", "refund_amount": "1500.00"})
    services.record_verdict(proposal.pk, people.finance1, "reject", "duplicate of A-1000")

    rows = list(Proposal.history.filter(id=proposal.pk).order_by("history_date"))

    assert [row.status for row in rows] == ["new", "pending_review", "rejected"]
    assert "refund-bot-integration" in rows[0].history_change_reason
    assert rows[1].history_change_reason.startswith("decided review")
    assert rows[2].history_user == people.finance1
    assert "duplicate of A-1000" in rows[2].history_change_reason
    changed = {f.attname for f in rows[2].tracked_fields if getattr(rows[2], f.attname) != getattr(rows[1], f.attname)}
    assert changed >= {"status", "status_reason"}


def test_history_cannot_be_reverted_around_the_lifecycle(settings):
    assert settings.SIMPLE_HISTORY_REVERT_DISABLED is True
