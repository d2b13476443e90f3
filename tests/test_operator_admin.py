"""The operator's buttons on the proposal page and the rollback batch pages, driven with Django's test client."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.test import Client

from approvals import operations
from approvals.models import Proposal, Review, Status
from connectors.models import Execution, RollbackBatch, SandboxRecord
from tests.conftest import matrix_spec, reload, rule, sandbox_record, tier


# Big refunds need two finance approvals, unsure ones go to triage, the rest to the triage desk.
pytestmark = pytest.mark.matrix(matrix_spec(
    rule("finance-large-refunds", "review", actions=["refund"], currency="USD", amount_min=Decimal("1000"),
         tiers=(tier("finance", 2),)),
    rule("triage-low-confidence", "triage", confidence_max=0.7),
))


def logged_in(user) -> Client:
    browser = Client()
    browser.force_login(user)
    return browser


def page(proposal: Proposal) -> str:
    return f"/admin/approvals/proposal/{proposal.pk}/change/"


def operate(browser: Client, proposal: Proposal, op: str, **fields):
    return browser.post(f"/admin/approvals/proposal/{proposal.pk}/operate/", {"op": op, **fields}, follow=True)


def order(record_id: str = "A-1001") -> dict:
    return sandbox_record(record_id).data


def big_refund(submit, key: str = "big") -> Proposal:
    return submit(key, amount="1500.00", changes={"status": "refunded", "refund_amount": "1500.00"})


def test_operators_see_take_over_and_reviewers_do_not(submit, people):
    proposal = big_refund(submit)

    assert b'id="take-over-button"' in logged_in(people.operator).get(page(proposal)).content
    reviewer_page = logged_in(people.finance1).get(page(proposal))
    assert reviewer_page.status_code == 200 and b'id="take-over-button"' not in reviewer_page.content


def test_after_a_take_over_reviewers_get_a_clear_refusal_instead_of_buttons(submit, people):
    proposal = big_refund(submit)

    taken = operate(logged_in(people.operator), proposal, "take_over", reason="customer called me")
    assert "Taken over" in taken.content.decode()

    reviewer = logged_in(people.finance1)
    shown = reviewer.get(page(proposal)).content.decode()
    assert 'id="approve-button"' not in shown and "operator has taken this proposal over" in shown
    refused = reviewer.post(f"/admin/approvals/proposal/{proposal.pk}/decide/", {"verdict": "approve"}, follow=True)
    assert "Not recorded: operator has taken this proposal over" in refused.content.decode()
    assert Review.objects.count() == 0


def test_an_operator_executes_an_edited_change_from_the_page(failed, people, django_capture_on_commit_callbacks):
    proposal = failed()
    browser = logged_in(people.operator)
    operate(browser, proposal, "take_over")

    done = operate(browser, proposal, "execute_edited", reason="customer agreed to 100",
                   changes=json.dumps({"status": "refunded", "refund_amount": "100.00"}))
    assert "another reviewer must approve it" in done.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        logged_in(people.triager).post(f"/admin/approvals/proposal/{proposal.pk}/decide/", {"verdict": "approve"})

    assert reload(proposal).status == Status.EXECUTED
    assert order()["refund_amount"] == "100.00"


def test_bad_input_comes_back_as_a_message_naming_the_field_not_a_500(failed, people):
    proposal = failed()
    browser = logged_in(people.operator)
    operate(browser, proposal, "take_over")

    bad_json = operate(browser, proposal, "execute_edited", reason="fix", changes="{not json")
    no_reason = operate(browser, proposal, "handled_manually", reason="")

    assert bad_json.status_code == 200 and "Not done: changes: not valid JSON" in bad_json.content.decode()
    assert "Not done: reason:" in no_reason.content.decode()
    assert reload(proposal).status == Status.FAILED


def test_a_reviewer_posting_an_operation_is_refused_with_a_message(submit, people):
    proposal = big_refund(submit)

    response = operate(logged_in(people.finance1), proposal, "take_over")

    assert response.status_code == 200 and "only operators" in response.content.decode()
    assert reload(proposal).claimed_by is None


def test_an_operator_marks_a_proposal_handled_manually_from_the_page_and_a_colleague_confirms(submit, people):
    proposal = submit("triaged", confidence=0.5)
    browser = logged_in(people.operator)
    operate(browser, proposal, "take_over")

    asked = operate(browser, proposal, "handled_manually", reason="refunded by phone")
    assert "a second operator must confirm" in asked.content.decode()
    assert 'id="confirm-manual-button"' not in asked.content.decode()  # not for the one who asked
    colleague = logged_in(people.make("operator2", "operators"))
    shown = colleague.get(page(proposal))
    assert 'id="confirm-manual-button"' in shown.content.decode()
    response = operate(colleague, proposal, "confirm_manual", reason="saw the phone log")

    assert "break glass" in response.content.decode()
    proposal = reload(proposal)
    assert proposal.status == Status.HANDLED_MANUALLY
    assert proposal.status_reason == "handled manually by operator: refunded by phone (break glass, confirmed by operator2)"


def test_an_operator_retries_a_failed_execution_from_the_page(failed, people, django_capture_on_commit_callbacks):
    proposal = failed()

    assert b'id="retry-button"' in logged_in(people.operator).get(page(proposal)).content
    with django_capture_on_commit_callbacks(execute=True):
        response = operate(logged_in(people.operator), proposal, "retry", reason="adapter fixed")

    assert "Execution retried" in response.content.decode()
    assert reload(proposal).status == Status.EXECUTED and order()["refund_amount"] == "120.00"


def test_an_operator_rolls_back_from_the_page(executed, people):
    proposal = executed("done")

    response = operate(logged_in(people.operator), proposal, "rollback", reason="wrong order")

    assert "Rolled back" in response.content.decode()
    assert reload(proposal).status == Status.ROLLED_BACK and order()["refund_amount"] == "0.00"
    assert "compensate #1: succeeded" in logged_in(people.operator).get(page(proposal)).content.decode()


def test_a_refused_rollback_names_the_changed_fields_on_the_page(executed, people):
    proposal = executed("changed")
    record = SandboxRecord.objects.get(type="order", record_id="A-1001")
    record.data = {**record.data, "status": "returned"}
    record.save()

    response = operate(logged_in(people.operator), proposal, "rollback", reason="wrong order")

    text = response.content.decode()
    assert "Not done: rollback refused: changed since the execution: status" in text
    assert reload(proposal).status == Status.EXECUTED and order()["status"] == "returned"


def test_branching_from_the_page_opens_the_branch_and_both_pages_show_the_thread(submit, people):
    original = big_refund(submit, key="order-1")

    response = operate(logged_in(people.operator), original, "branch", reason="one item only",
                       changes=json.dumps({"status": "refunded", "refund_amount": "50.00"}))

    branch = Proposal.objects.get(parent=original)
    assert response.redirect_chain[-1][0] == page(branch)
    assert "Branched from" in response.content.decode()
    original_page = logged_in(people.operator).get(page(original)).content.decode()
    assert 'id="proposal-thread"' in original_page and str(branch.pk) in original_page
    assert "superseded by branch" in original_page


def test_roll_back_selected_queues_a_batch_whose_page_shows_progress_and_the_manual_list(
    executed, people, django_capture_on_commit_callbacks
):
    clean, changed = executed("one", record="A-1001"), executed("two", record="A-1002")
    record = SandboxRecord.objects.get(type="order", record_id="A-1002")
    record.data = {**record.data, "status": "returned"}
    record.save()
    browser = logged_in(people.operator)

    asked = browser.post("/admin/approvals/proposal/?queue=all",
                         {"action": "rollback_selected", "_selected_action": [clean.pk, changed.pk]})
    assert asked.status_code == 200 and b"Roll back these proposals?" in asked.content
    with django_capture_on_commit_callbacks(execute=True):
        queued = browser.post("/admin/approvals/proposal/?queue=all", {
            "action": "rollback_selected", "_selected_action": [clean.pk, changed.pk], "reason": "bad batch of refunds"})

    batch = RollbackBatch.objects.get()
    assert queued.url == f"/admin/connectors/rollbackbatch/{batch.pk}/change/"
    shown = browser.get(queued.url).content.decode()
    assert "2/2 done: 1 rolled back, 1 skipped" in shown
    assert 'id="manual-list"' in shown and str(changed.pk) in shown and "status" in shown
    assert (reload(clean).status, reload(changed).status) == (Status.ROLLED_BACK, Status.EXECUTED)


def test_an_operator_starts_a_batch_by_agent_from_the_batch_form(executed, people, django_capture_on_commit_callbacks):
    proposal = executed("agent-batch")
    browser = logged_in(people.operator)
    assert browser.get("/admin/connectors/rollbackbatch/add/").status_code == 200

    nothing = browser.post("/admin/connectors/rollbackbatch/add/", {"agent": "no-such-bot", "reason": "x"})
    assert b"no executed proposal matches" in nothing.content
    with django_capture_on_commit_callbacks(execute=True):
        started = browser.post("/admin/connectors/rollbackbatch/add/", {"agent": "refund-bot", "reason": "incident 12"})

    batch = RollbackBatch.objects.get()
    assert started.url == f"/admin/connectors/rollbackbatch/{batch.pk}/change/"
    assert (reload(batch).status, reload(batch).rolled_back) == ("done", 1)
    assert reload(proposal).status == Status.ROLLED_BACK
    assert Execution.objects.filter(kind="compensate", outcome="succeeded").count() == 1


def test_reviewers_cannot_open_rollback_batches(people, sandbox):
    assert logged_in(people.finance1).get("/admin/connectors/rollbackbatch/add/").status_code == 403
    assert not operations.is_operator(people.finance1)
