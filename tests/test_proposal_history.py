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


def test_history_rows_written_in_one_statement_store_what_bulk_create_stores(submit, people):
    """A submission's history rows go through approvals.history_rows' own INSERT: read back, every
    column holds what Django's bulk_create stores for the same rows, and each row has its own id."""
    from django.utils import timezone

    from approvals import history_rows

    proposal = submit("history-insert", observed={"refund_amount": "0.00"})
    history = history_rows.history_model(Proposal)
    at = timezone.now()
    ours = [history_rows.row(proposal, "~", "ours", at), history_rows.row(proposal, "~", "ours", at)]
    theirs = [history_rows.row(proposal, "~", "theirs", at), history_rows.row(proposal, "~", "theirs", at)]
    history_rows.write(ours, [proposal, proposal])
    history.objects.bulk_create(theirs)

    assert len({row.pk for row in ours + theirs}) == 4 and all(row.pk for row in ours)
    stored = {row.pop("history_id"): row | {"history_change_reason": None}
              for row in history.objects.filter(pk__in=[row.pk for row in ours + theirs]).values()}
    assert stored[ours[0].pk] == stored[theirs[0].pk] == stored[ours[1].pk] == stored[theirs[1].pk]
    assert len(stored[ours[0].pk]) == len(history._meta.concrete_fields) - 1  # every column but the id
    assert stored[ours[0].pk]["amount"] == proposal.amount and stored[ours[0].pk]["changes"] == proposal.changes
    assert stored[ours[0].pk]["history_date"] == at and stored[ours[0].pk]["observed"] == {"refund_amount": "0.00"}
