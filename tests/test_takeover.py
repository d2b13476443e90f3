"""Operators taking a proposal over: editing and executing it, closing it by hand, retrying, branching."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.test import Client

from approvals import execution, operations, services
from approvals.facts import change_hash
from approvals.models import BreakGlass, Proposal, Review, ReviewTask, Status
from approvals import rollback
from connectors.models import Execution
from tests.conftest import matrix_spec, reload, rule, sandbox_record, tier


# What `submit` is decided by: large refunds need two finance approvals, small confident ones run alone,
# unsure ones go to triage.
pytestmark = pytest.mark.matrix(matrix_spec(
    rule("finance-large-refunds", "review", actions=["refund"], currency="USD", amount_min=Decimal("1000"),
         tiers=(tier("finance", 2),)),
    rule("triage-low-confidence", "triage", confidence_max=0.7),
    rule("auto-small-refunds", "auto", actions=["refund"], currency="USD", amount_max=Decimal("100"),
         confidence_min=0.9),
))


def big_refund(submit, key: str = "big") -> Proposal:
    return submit(key, amount="1500.00", changes={"status": "refunded", "refund_amount": "1500.00"})


# ---- take over / release -----------------------------------------------------------------------

def test_while_an_operator_holds_a_proposal_other_reviewers_verdicts_are_refused(submit, people):
    proposal = big_refund(submit)

    operations.take_over(proposal.pk, people.operator, "customer escalated to me")

    proposal = reload(proposal)
    assert proposal.claimed_by == people.operator
    with pytest.raises(services.NotReviewable, match="operator has taken this proposal over"):
        services.record_verdict(proposal.pk, people.finance1, "approve")
    assert Review.objects.count() == 0
    assert "operator has taken this proposal over" in operations.claim_refusal(proposal, people.finance1)
    newest = proposal.history.first()
    assert newest.claimed_by_id == people.operator.pk and newest.history_user == people.operator
    assert "customer escalated to me" in newest.history_change_reason


def test_another_operator_cannot_take_over_a_held_proposal(submit, people):
    proposal = big_refund(submit)
    operations.take_over(proposal.pk, people.operator)
    colleague = people.make("operator2", "operators")

    with pytest.raises(operations.OperationRefused, match="already taken over by operator"):
        operations.take_over(proposal.pk, colleague)


def test_the_submitting_agents_user_cannot_take_over_its_own_proposal(submit, people):
    proposal = big_refund(submit)
    proposal.integration.acts_for = people.operator
    proposal.integration.save()

    with pytest.raises(PermissionDenied, match="its own proposal"):
        operations.take_over(proposal.pk, people.operator)
    assert reload(proposal).claimed_by is None


def test_releasing_resumes_review_where_it_paused(submit, people):
    proposal = big_refund(submit)
    operations.take_over(proposal.pk, people.operator)

    operations.release(proposal.pk, people.operator, "finance can take it from here")
    services.record_verdict(proposal.pk, people.finance1, "approve")

    proposal = reload(proposal)
    assert proposal.claimed_by is None and proposal.due_at is not None
    assert services.active_task(proposal).reviews.count() == 1


def test_only_open_proposals_can_be_taken_over_and_only_by_operators(submit, people):
    proposal = big_refund(submit)
    with pytest.raises(PermissionDenied):
        operations.take_over(proposal.pk, people.finance1)
    services.record_verdict(proposal.pk, people.finance1, "reject", "duplicate")

    with pytest.raises(operations.OperationRefused, match="rejected"):
        operations.take_over(proposal.pk, people.operator)


def test_a_held_proposal_refuses_a_colleagues_triage_decision_whichever_path_asks(submit, people):
    proposal = submit("unsure", confidence=0.4)
    assert proposal.status == Status.TRIAGE
    colleague = people.make("second-operator", "operators", "triage")
    operations.take_over(proposal.pk, people.operator, "I know this customer")

    with pytest.raises(services.NotReviewable, match="operator has taken this proposal over"):
        services.reject_held(proposal.pk, colleague, "looks wrong")
    with pytest.raises(services.NotReviewable, match="operator has taken this proposal over"):
        services.send_to_review(proposal.pk, colleague, "looks fine")
    assert reload(proposal).status == Status.TRIAGE


# ---- execute an edited change -------------------------------------------------------------------

def test_an_operator_edits_a_failed_proposal_and_executes_the_edited_change(failed, people):
    proposal = failed()
    operations.take_over(proposal.pk, people.operator, "adapter fixed; customer agreed to 100")

    proposal = operations.execute_edited(proposal.pk, people.operator,
                                         {"status": "refunded", "refund_amount": "100.00"}, "partial refund agreed")

    assert proposal.status == Status.PENDING_REVIEW and proposal.claimed_by is None
    assert proposal.edited_by == people.operator
    with pytest.raises(PermissionDenied, match="edited this change"):
        services.record_verdict(proposal.pk, people.operator, "approve")
    services.record_verdict(proposal.pk, people.triager, "approve")
    proposal = reload(proposal)
    assert proposal.status == Status.APPROVED
    assert proposal.approved_hash == proposal.change_hash == change_hash(proposal)
    assert {"field": "refund_amount", "before": "0.00", "after": "100.00", "sensitive": True} in proposal.preview["changes"]
    assert execution.run(proposal.pk).status == Status.EXECUTED
    assert sandbox_record("A-1001").data["refund_amount"] == "100.00"
    assert reload(proposal).edited is True


def test_an_edit_the_policy_would_run_alone_still_needs_a_second_operator(failed, people):
    proposal = failed("small", amount="40.00", confidence=0.97, changes={"status": "refunded", "refund_amount": "40.00"})
    operations.take_over(proposal.pk, people.operator)

    proposal = operations.execute_edited(proposal.pk, people.operator,
                                         {"status": "refunded", "refund_amount": "30.00"}, "customer kept one item")

    assert proposal.status == Status.PENDING_REVIEW
    task = services.active_task(proposal)
    assert (task.group.name, task.required) == ("operators", 1)
    services.record_verdict(proposal.pk, people.make("operator2", "operators"), "approve")
    assert reload(proposal).status == Status.APPROVED
    last_tier = reload(proposal).review_tasks.order_by("position").last()
    assert (last_tier.group.name, last_tier.state) == ("operators", ReviewTask.State.SATISFIED)


def test_a_take_over_never_skips_the_tier_the_policy_requires(submit, people):
    proposal = big_refund(submit)
    operations.take_over(proposal.pk, people.operator)

    proposal = operations.execute_edited(proposal.pk, people.operator,
                                         {"status": "refunded", "refund_amount": "1200.00"}, "customer agreed to less")

    assert proposal.status == Status.PENDING_REVIEW and proposal.claimed_by is None
    task = services.active_task(proposal)
    assert (task.group.name, task.required) == ("finance", 2)
    assert proposal.changes["refund_amount"] == "1200.00"
    assert not proposal.reviews.filter(reviewer=people.operator).exists()


def test_only_the_operator_holding_the_proposal_executes_an_edit(failed, people):
    proposal = failed()

    with pytest.raises(operations.OperationRefused, match="take the proposal over first"):
        operations.execute_edited(proposal.pk, people.operator, {"status": "refunded"}, "why")
    with pytest.raises(ValidationError) as error:
        operations.execute_edited(proposal.pk, people.operator, {}, "why")
    assert "changes" in error.value.message_dict
    assert reload(proposal).status == Status.FAILED


# ---- handled manually ---------------------------------------------------------------------------

def test_an_operator_marks_an_approved_proposal_handled_manually_at_once(failed, people):
    proposal = failed("manual")
    operations.take_over(proposal.pk, people.operator)

    operations.handle_manually(proposal.pk, people.operator, "refunded by phone, ref 7781")

    proposal = reload(proposal)
    assert not BreakGlass.objects.exists()
    assert proposal.status == Status.HANDLED_MANUALLY
    assert proposal.status_reason == "handled manually by operator: refunded by phone, ref 7781"
    done = proposal.executions.get(outcome=Execution.Outcome.MANUAL)
    assert (done.kind, done.attempt, done.request["handled_manually_by"]) == ("execute", 2, "operator")
    assert sandbox_record("A-1001").data["refund_amount"] == "0.00"  # nothing was written through the connector


def test_closing_unapproved_work_by_hand_needs_a_second_operator_and_is_recorded_as_break_glass(submit, people):
    """One operator alone cannot close what the policy wanted two finance approvals for."""
    proposal = big_refund(submit, "manual-big")
    operations.take_over(proposal.pk, people.operator)

    operations.handle_manually(proposal.pk, people.operator, "refunded by phone")
    assert reload(proposal).status == Status.PENDING_REVIEW
    with pytest.raises(PermissionDenied, match="second operator"):
        operations.confirm_manual_handling(proposal.pk, people.operator, "I am sure")
    colleague = people.make("operator2", "operators")
    operations.confirm_manual_handling(proposal.pk, colleague, "checked the phone log")

    proposal = reload(proposal)
    assert proposal.status == Status.HANDLED_MANUALLY
    assert "break glass, confirmed by operator2" in proposal.status_reason
    glass = BreakGlass.objects.get()
    assert (glass.requested_by, glass.confirmed_by, glass.reason, glass.status_before) == (
        people.operator, colleague, "refunded by phone", Status.PENDING_REVIEW)
    board, reviewer = Client(), Client()
    board.force_login(people.board1)
    reviewer.force_login(people.finance1)
    listed = board.get("/admin/approvals/breakglass/")
    assert listed.status_code == 200 and "operator2" in listed.content.decode()
    assert reviewer.get("/admin/approvals/breakglass/").status_code == 403


def test_the_submitting_agents_user_cannot_be_the_second_operator(submit, people):
    agent_user = people.make("agent-operator", "operators")
    submit.integration.acts_for = agent_user
    submit.integration.save()
    proposal = big_refund(submit, "manual-own")
    operations.take_over(proposal.pk, people.operator)
    operations.handle_manually(proposal.pk, people.operator, "refunded by phone")

    with pytest.raises(PermissionDenied, match="submitting agent's user"):
        operations.confirm_manual_handling(proposal.pk, agent_user, "fine by me")
    assert reload(proposal).status == Status.PENDING_REVIEW and not BreakGlass.objects.exists()


def test_a_manual_handling_request_ends_when_the_claim_is_released(submit, people):
    proposal = big_refund(submit, "manual-released")
    operations.take_over(proposal.pk, people.operator)
    operations.handle_manually(proposal.pk, people.operator, "refunded by phone")
    operations.release(proposal.pk, people.operator)

    with pytest.raises(operations.OperationRefused, match="no operator is asking"):
        operations.confirm_manual_handling(proposal.pk, people.make("operator2", "operators"), "ok")
    assert reload(proposal).status == Status.PENDING_REVIEW


def test_work_done_by_hand_is_not_rolled_back_by_hitl_gov(failed, people):
    proposal = failed("manual-rollback")
    operations.take_over(proposal.pk, people.operator)
    operations.handle_manually(proposal.pk, people.operator, "done by phone")

    result = rollback.rollback_proposal(proposal.pk, people.operator, "undo")

    assert result.outcome == "refused" and "by hand" in result.message
    assert reload(proposal).status == Status.HANDLED_MANUALLY


def test_handling_manually_needs_the_claim_and_a_reason(submit, people):
    proposal = submit("manual-rules", confidence=0.5)

    with pytest.raises(operations.OperationRefused):
        operations.handle_manually(proposal.pk, people.operator, "done")
    operations.take_over(proposal.pk, people.operator)
    with pytest.raises(ValidationError) as error:
        operations.handle_manually(proposal.pk, people.operator, "")
    assert "reason" in error.value.message_dict
    assert reload(proposal).status == Status.TRIAGE


# ---- retry -------------------------------------------------------------------------------------

def test_an_operator_retries_a_failed_execution_unless_a_colleague_holds_it(
    failed, people, django_capture_on_commit_callbacks
):
    proposal = failed()
    colleague = people.make("operator2", "operators")
    operations.take_over(proposal.pk, colleague)

    with pytest.raises(operations.OperationRefused, match="operator2 has taken this proposal over"):
        operations.retry(proposal.pk, people.operator, "adapter fixed")
    with django_capture_on_commit_callbacks(execute=True):
        operations.retry(proposal.pk, colleague, "adapter fixed")

    assert reload(proposal).status == Status.EXECUTED
    assert sandbox_record("A-1001").data["refund_amount"] == "120.00"


# ---- branch ------------------------------------------------------------------------------------

def test_a_branch_is_decided_from_scratch_and_supersedes_its_open_original(submit, people):
    original = big_refund(submit, key="order-A-1001")

    branch = operations.branch(original.pk, people.operator, {"status": "refunded", "refund_amount": "50.00"},
                               "only one item was damaged")

    assert (branch.parent, branch.integration, branch.agent) == (original, original.integration, original.agent)
    assert branch.idempotency_key == "order-A-1001:branch:1"
    assert branch.changes == {"status": "refunded", "refund_amount": "50.00"}
    assert branch.status == Status.PENDING_REVIEW and branch.decision["matrix_version"]
    assert branch.history.first().history_user == people.operator
    original = reload(original)
    assert original.status == Status.CANCELLED and str(branch.pk) in original.status_reason


def test_branching_a_closed_proposal_leaves_it_as_it_is(failed, people):
    original = failed("closed")
    operations.take_over(original.pk, people.operator)
    operations.handle_manually(original.pk, people.operator, "done by phone")

    first = operations.branch(original.pk, people.operator, {"status": "refunded", "refund_amount": "10.00"}, "goodwill")
    second = operations.branch(original.pk, people.operator, {"status": "refunded", "refund_amount": "20.00"}, "more")

    assert reload(original).status == Status.HANDLED_MANUALLY
    assert [first.idempotency_key, second.idempotency_key] == ["closed:branch:1", "closed:branch:2"]


def test_a_branch_needs_changes_and_a_reason(submit, people):
    original = big_refund(submit)

    with pytest.raises(ValidationError) as no_changes:
        operations.branch(original.pk, people.operator, {}, "why")
    with pytest.raises(ValidationError) as no_reason:
        operations.branch(original.pk, people.operator, {"status": "refunded"}, "")

    assert "changes" in no_changes.value.message_dict and "reason" in no_reason.value.message_dict
    assert Proposal.objects.count() == 1


# ---- one thread --------------------------------------------------------------------------------

def test_the_thread_tells_the_story_in_order(failed, people):
    proposal = failed("thread")
    operations.take_over(proposal.pk, people.operator)
    operations.execute_edited(proposal.pk, people.operator, {"status": "refunded", "refund_amount": "90.00"}, "agreed")
    services.record_verdict(proposal.pk, people.make("operator2", "operators"), "approve")
    execution.run(proposal.pk)
    rollback.rollback_proposal(proposal.pk, people.operator, "customer changed their mind")
    branch = operations.branch(proposal.pk, people.operator, {"status": "refunded", "refund_amount": "80.00"}, "retry")

    events = operations.thread(reload(proposal))

    assert [event.at for event in events] == sorted(event.at for event in events)
    kinds = [event.kind for event in events]
    for earlier, later in [("claim", "edit"), ("edit", "compensate"), ("execute", "compensate"), ("compensate", "branch")]:
        assert kinds.index(earlier) < len(kinds) - 1 - kinds[::-1].index(later)
    assert [event.link for event in events if event.kind == "branch"] == [str(branch.pk)]
    assert any("refund_amount" in event.text for event in events if event.kind == "edit")
    assert [event.text for event in events if event.kind == "compensate"] == ["compensate #1: succeeded"]
    assert Execution.objects.filter(proposal=proposal).count() == 3  # failed write, edited write, compensation


def test_sending_a_held_proposal_to_review_ends_the_senders_claim(submit, people):
    proposal = submit("held", confidence=0.5)
    operations.take_over(proposal.pk, people.operator)

    operations.send_to_review(proposal.pk, people.operator, "it is a plain refund")
    services.record_verdict(proposal.pk, people.triager, "approve")

    proposal = reload(proposal)
    assert proposal.claimed_by is None and proposal.status == Status.APPROVED
