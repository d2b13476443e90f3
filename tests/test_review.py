"""Reviewers deciding proposals: who may, how many must, and what an edit does."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection

from approvals import services
from approvals.models import Review, Status
from tests.conftest import proposal_body, reload, sandbox_record


def big_refund(submit, key="big-refund"):
    return submit(idempotency_key=key, action="refund", amount="1500.00",
                  changes={"status": "refunded", "refund_amount": "1500.00"})


def test_refund_over_limit_goes_to_finance_with_two_approvals(submit):
    proposal = big_refund(submit)

    task = services.active_task(proposal)
    assert proposal.status == Status.PENDING_REVIEW
    assert (task.group.name, task.required) == ("finance", 2)


def test_one_finance_approval_of_two_keeps_it_waiting(submit, people):
    proposal = big_refund(submit)

    services.record_verdict(proposal.pk, people.finance1, "approve")

    assert reload(proposal).status == Status.PENDING_REVIEW


def test_two_finance_approvals_approve_and_execute_it(submit, people, django_capture_on_commit_callbacks):
    proposal = big_refund(submit)

    services.record_verdict(proposal.pk, people.finance1, "approve")
    with django_capture_on_commit_callbacks(execute=True):
        services.record_verdict(proposal.pk, people.finance2, "approve")

    assert reload(proposal).status == Status.EXECUTED
    assert sandbox_record("A-1001").data["refund_amount"] == "1500.00"


def test_a_reviewer_counts_once_per_tier(submit, people):
    proposal = big_refund(submit)
    services.record_verdict(proposal.pk, people.finance1, "approve")

    with pytest.raises(services.NotReviewable):
        services.record_verdict(proposal.pk, people.finance1, "approve")
    assert reload(proposal).status == Status.PENDING_REVIEW


def test_a_reviewer_of_another_group_cannot_approve(submit, people):
    proposal = big_refund(submit)

    with pytest.raises(PermissionDenied):
        services.record_verdict(proposal.pk, people.support1, "approve")
    assert Review.objects.count() == 0


def test_the_submitting_agent_cannot_approve_its_own_proposal(submit, people):
    """Even when its key acts for a finance reviewer, the agent cannot decide what it proposed."""
    submit.integration.acts_for = people.finance1
    submit.integration.save()
    proposal = big_refund(submit)

    with pytest.raises(PermissionDenied):
        services.record_verdict(proposal.pk, people.finance1, "approve", integration=submit.integration)
    with pytest.raises(PermissionDenied):
        services.record_verdict(proposal.pk, people.finance1, "approve")
    assert Review.objects.count() == 0


def test_rejecting_needs_a_reason(submit, people):
    proposal = big_refund(submit)

    with pytest.raises(ValidationError) as error:
        services.record_verdict(proposal.pk, people.finance1, "reject", "  ")
    assert "reason" in error.value.message_dict

    services.record_verdict(proposal.pk, people.finance1, "reject", "customer already refunded")
    assert reload(proposal).status == Status.REJECTED
    assert reload(proposal).status_reason == "customer already refunded"


def test_a_decided_proposal_takes_no_more_verdicts(submit, people):
    proposal = big_refund(submit)
    services.record_verdict(proposal.pk, people.finance1, "reject", "no")

    with pytest.raises(services.NotReviewable):
        services.record_verdict(proposal.pk, people.finance2, "approve")


def test_an_edit_is_decided_again_by_the_policy(submit, people):
    """Cutting a 1,500 refund to 50 routes it by the rules for 50, which would run it alone; a person's
    edit never does, so it waits on the editor's tier, for someone other than the editor."""
    proposal = big_refund(submit)

    services.record_verdict(proposal.pk, people.finance1, "approve", "partial refund only",
                            changes={"status": "refunded", "refund_amount": "50.00"})

    proposal = reload(proposal)
    assert proposal.edited is True and proposal.amount == Decimal("50.00")
    assert proposal.changes["refund_amount"] == "50.00"
    assert {"field": "refund_amount", "before": "0.00", "after": "50.00", "sensitive": True} in proposal.preview["changes"]
    assert proposal.history.filter(history_change_reason__startswith="decided").count() == 2
    assert proposal.decision["rules"] == ["auto-confident-small-money"]
    assert proposal.status == Status.PENDING_REVIEW and proposal.outcome == "review"
    task = services.active_task(proposal)
    assert (task.group.name, task.required) == ("finance", 1)


def test_approvals_of_the_old_change_do_not_count_for_the_edited_one(submit, people):
    proposal = big_refund(submit)
    services.record_verdict(proposal.pk, people.finance1, "approve")

    services.record_verdict(proposal.pk, people.finance2, "approve", "round down",
                            changes={"status": "refunded", "refund_amount": "1400.00"})

    proposal = reload(proposal)
    assert proposal.status == Status.PENDING_REVIEW
    task = services.active_task(proposal)
    assert (task.group.name, task.required) == ("finance", 2)
    assert task.reviews.filter(change_hash=proposal.change_hash).count() == 0  # and the editor's own cannot count


@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_final_approvals_approve_and_execute_once(submit, people, monkeypatch):
    """Two reviewers click at once on a one-approval tier: one wins, one is told, one execution."""
    from approvals import outbox
    from approvals.models import OutboxMessage

    queued = []  # tasks handed to the broker after commit (held here, so nothing runs)
    monkeypatch.setattr(outbox, "publish", lambda task, args: queued.append((task, args)))
    proposal = submit("race", amount="120.00")
    task = services.active_task(proposal)
    second = people.make("second-reviewer", task.group.name)
    first = people.make("first-reviewer", task.group.name)
    barrier = threading.Barrier(2)
    outcomes = []

    def decide(user):
        barrier.wait()
        try:
            services.record_verdict(proposal.pk, user, "approve")
            outcomes.append("approved")
        except services.NotReviewable as exc:
            outcomes.append(f"refused: {exc}")
        finally:
            connection.close()

    threads = [threading.Thread(target=decide, args=(user,)) for user in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(o.split(":")[0] for o in outcomes) == ["approved", "refused"], outcomes
    assert reload(proposal).status == Status.APPROVED
    (message,) = OutboxMessage.objects.filter(proposal=proposal, task=outbox.EXECUTE)
    assert [args for task, args in queued if task == outbox.EXECUTE] == [message.args] == [[str(proposal.pk)]]
    assert message.sent_at is not None


def test_group_membership_without_the_review_permission_is_not_enough(submit, people):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    proposal = big_refund(submit)
    intern = get_user_model().objects.create_user("intern", password="pw", is_staff=True)
    intern.groups.add(Group.objects.get(name="finance"))
    intern.user_permissions.clear()
    Group.objects.get(name="finance").permissions.clear()

    with pytest.raises(PermissionDenied):
        services.record_verdict(proposal.pk, intern, "approve")


def test_only_operators_release_a_proposal_from_triage(submit, people):
    proposal = submit(idempotency_key="unsure", confidence=0.4)
    assert proposal.status == Status.TRIAGE

    with pytest.raises(PermissionDenied):
        services.send_to_review(proposal.pk, people.finance1, "looks fine to me")
    services.send_to_review(proposal.pk, people.operator, "checked with the customer")

    assert reload(proposal).status == Status.PENDING_REVIEW


def test_a_large_matrix_stores_the_rules_that_could_apply_and_counts_the_rest(publish, sandbox, make_client):
    from tests.conftest import matrix_spec, rule

    noise = [rule(f"erp-{n}", "block", connectors=["erp"], actions=[f"a{n}"]) for n in range(600)]
    publish(matrix_spec(rule("refunds", "review", actions=["refund"]), *noise))
    client = make_client("refund-bot-integration")
    data = proposal_body(amount=Decimal("120.00"))

    proposal, _ = services.submit_proposal(client.integration, data)

    assert proposal.decision["trace"] == [
        {"rule": "refunds", "matched": True, "reason": "action refund in [refund]"},
        {"skipped": 600, "field": "connector", "reason": "600 rules name another connector"},
    ]


def test_the_decision_page_shows_the_skipped_rules_as_a_count(publish, sandbox, make_client, people):
    from django.test import Client
    from django.urls import reverse

    from tests.conftest import matrix_spec, rule, tier

    noise = [rule(f"erp-{n}", "block", connectors=["erp"], actions=[f"a{n}"]) for n in range(600)]
    publish(matrix_spec(rule("refunds", "review", tiers=(tier("finance"),), actions=["refund"]), *noise))
    proposal, _ = services.submit_proposal(make_client("refund-bot-integration").integration,
                                           proposal_body(amount=Decimal("120.00")))
    reviewer = Client()
    reviewer.force_login(people.finance1)

    page = reviewer.get(reverse("admin:approvals_proposal_change", args=[proposal.pk])).content.decode()

    assert "<td>refunds</td><td>yes</td><td>action refund in [refund]</td>" in page
    assert "<td>(600 not listed)</td><td>no</td><td>600 rules name another connector</td>" in page
    assert "erp-17" not in page
