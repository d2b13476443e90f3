"""The board room: the dashboard's numbers, canary proposals, approve-as-rule and the one-click switches."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals import board, board_days, execution, services
from approvals.canaries import plant_canary
from approvals.models import CanaryPlant, OutboxMessage, Proposal, Review, Status
from connectors.models import Connector
from policies.models import ApprovalMatrix, KillSwitch, MatrixStatus
from policies.services import block_everything, draft_auto_rule, stop_all_automation
from tests.conftest import approve_all, reload

BIG_REFUND = {"amount": "4800.00", "changes": {"status": "refunded", "refund_amount": "4800.00"}}


def canary(people, submit, **overrides):
    data = {"agent": "refund-bot", "action": "refund", "target": {"type": "order", "id": "A-1003"},
            "changes": {"status": "refunded", "refund_amount": "290.00"}, "amount": Decimal("290.00"), "currency": "USD",
            "confidence": 0.9, "customer_impact": "low", "rationale": "Customer asked nicely", **overrides}
    return plant_canary(people.board1, submit.integration, Connector.objects.get(slug="helpdesk"), data,
                        note="refunds an order that was never delivered late")


# ---- canaries ---------------------------------------------------------------------------------

def test_a_canary_waits_in_the_queue_the_policy_routes_it_to_and_its_history_does_not_give_it_away(people, submit):
    real = submit()
    planted = canary(people, submit)

    assert planted.status == Status.PENDING_REVIEW
    assert services.active_task(planted).group.name == services.active_task(real).group.name
    assert CanaryPlant.objects.get(proposal=planted).planted_by == people.board1
    first = planted.history.earliest()
    assert first.history_user is None and first.history_change_reason == real.history.earliest().history_change_reason
    assert not hasattr(first, "canary")


def test_an_approved_canary_is_closed_and_never_executed(people, submit):
    planted = canary(people, submit)

    approve_all(planted, people)

    planted = reload(planted)
    assert planted.status == Status.CANCELLED
    assert "without execution" in planted.status_reason
    assert not OutboxMessage.objects.filter(proposal=planted).exists()
    assert not planted.executions.exists()


def test_the_executor_refuses_a_canary_even_if_asked(people, submit):
    planted = canary(people, submit)
    Proposal.objects.filter(pk=planted.pk).update(status=Status.APPROVED, approved_hash=planted.change_hash)

    execution.run(planted.pk)

    assert reload(planted).status == Status.FAILED
    assert "canary" in reload(planted).status_reason
    assert not planted.executions.exists()


def test_only_the_board_plants_canaries(people, submit):
    with pytest.raises(PermissionDenied):
        plant_canary(people.finance1, submit.integration, Connector.objects.get(slug="helpdesk"),
                     {"agent": "refund-bot", "action": "refund", "changes": {"status": "refunded"}, "confidence": 0.9})
    assert not Proposal.objects.filter(canary=True).exists()


def test_a_canary_with_an_action_its_connector_does_not_offer_is_refused(people, submit):
    with pytest.raises(ValidationError) as refused:
        canary(people, submit, action="no_such_action")
    assert "helpdesk offers" in refused.value.message_dict["action"][0]
    assert not Proposal.objects.filter(canary=True).exists()


def test_a_canary_the_policy_would_block_is_refused_and_nothing_is_stored(people, submit):
    with pytest.raises(ValidationError) as refused:
        canary(people, submit, action="delete_record")
    assert "the live policy would block this" in refused.value.message_dict["action"][0]
    assert not Proposal.objects.filter(canary=True).exists()


def test_catch_rate_counts_rejected_canaries_per_reviewer(people, submit):
    caught, missed = canary(people, submit), canary(people, submit, target={"type": "order", "id": "A-1004"})
    group = services.active_task(caught).group.name
    reviewer = people.make("careful", group)
    services.record_verdict(caught.pk, reviewer, "reject", "never delivered late")
    services.record_verdict(missed.pk, reviewer, "approve")

    records = {r.reviewer: r for r in board.reviewer_oversight(timezone.now() - timedelta(days=1))}

    assert (records["careful"].canaries, records["careful"].caught, records["careful"].catch_rate) == (2, 1, 0.5)


# ---- the dashboard's numbers ------------------------------------------------------------------

def test_dashboard_counts_pending_overdue_outcomes_and_rates(people, submit):
    waiting = submit("waiting", **BIG_REFUND)
    rejected = submit("rejected", **BIG_REFUND)
    for task_reviewer in (people.finance1,):
        services.record_verdict(rejected.pk, task_reviewer, "reject", "too much")
    later = timezone.now() + timedelta(days=3)

    data = board.dashboard(now=later)

    queues = {q.group: q for q in data.queues}
    group = services.active_task(waiting).group.name
    assert (queues[group].pending, queues[group].overdue) == (1, 1)
    assert data.overdue == 1
    assert data.outcomes["review"] == 2
    rates = {(r.agent, r.action): r for r in data.rates}
    assert (rates["refund-bot", "refund"].decided, rates["refund-bot", "refund"].rejected) == (1, 1)
    assert rates["refund-bot", "refund"].override_rate == 1.0


def test_time_to_verdict_median_and_p95_by_nearest_rank(people, submit):
    start = timezone.now().replace(microsecond=0)
    for minutes in (1, 2, 3, 4, 100):
        proposal = submit(f"wait-{minutes}", **BIG_REFUND)
        services.record_verdict(proposal.pk, people.finance1, "reject", "no")
        # The times are the measurement's input: set them on the stored rows instead of waiting.
        Proposal.objects.filter(pk=proposal.pk).update(created_at=start)
        Review.objects.filter(proposal=proposal).update(created_at=start + timedelta(minutes=minutes))

    median, p95 = board.wait_percentiles(start - timedelta(days=1), 5)

    assert (median, p95) == (timedelta(minutes=3), timedelta(minutes=100))


def test_approve_as_rule_suggests_the_lowest_confidence_above_every_override(decided_record):
    for n in range(board.RULE_MIN_SAMPLE):
        decided_record(1, confidence=0.96 + n / 1000)
    decided_record(1, confidence=0.9, status=Status.REJECTED)
    decided_record(3, agent="other-bot", confidence=0.99, status=Status.REJECTED)

    [suggestion] = board.rule_suggestions()

    assert (suggestion.agent, suggestion.action, suggestion.connector) == ("crm-assistant", "update_account", "crm")
    assert suggestion.confidence_min == 0.96
    assert (suggestion.clean, suggestion.seen, suggestion.overrides) == (board.RULE_MIN_SAMPLE, board.RULE_MIN_SAMPLE + 1, 1)
    assert suggestion.sentence == (
        f"auto-approve update_account by crm-assistant with confidence >= 0.96: 0 overrides in the last {board.RULE_MIN_SAMPLE}")


def test_approve_as_rule_looks_at_the_last_window_only(decided_record):
    decided_record(5, confidence=0.99, edited=True)  # older edits, out of the window of the last 30
    decided_record(30, confidence=0.95)

    [suggestion] = board.rule_suggestions(window=30, min_sample=30)

    assert (suggestion.confidence_min, suggestion.clean, suggestion.overrides) == (0.95, 30, 0)


def test_no_suggestion_from_too_few_clean_decisions_or_from_canaries(decided_record):
    decided_record(board.RULE_MIN_SAMPLE - 1)
    decided_record(5, canary=True)

    assert board.rule_suggestions() == []


# ---- policies.services: approve-as-rule and the global switches -------------------------------

def test_a_drafted_auto_rule_is_a_new_draft_with_one_more_rule(people, matrix):
    draft = draft_auto_rule(people.board1, connector="crm", action="update_account", agent="crm-assistant",
                            confidence_min=0.95, evidence="0 overrides in the last 200")

    assert draft.status == MatrixStatus.DRAFT and draft.author == people.board1
    added = draft.rules.get(name="auto-update_account-by-crm-assistant")
    assert (added.outcome, added.actions, added.agents, added.connectors, added.confidence_min) == (
        "auto", "update_account", "crm-assistant", "crm", 0.95)
    assert draft.rules.count() == matrix.rules.count() + 1
    assert ApprovalMatrix.objects.get(status=MatrixStatus.PUBLISHED) == matrix


def test_only_board_members_draft_auto_rules(people, matrix):
    with pytest.raises(PermissionDenied):
        draft_auto_rule(people.finance1, connector="crm", action="update_account", agent="a", confidence_min=0.9, evidence="")
    assert ApprovalMatrix.objects.count() == 1


def test_stop_all_automation_engages_one_global_force_review_switch(people, db):
    first = stop_all_automation(people.board1, "INC-12")
    again = stop_all_automation(people.board2, "INC-12 again")

    assert first == again
    assert (first.scope, first.mode, first.engaged, first.changed_by) == ("global", "force_review", True, people.board1)


def test_block_everything_needs_a_reason_and_the_permission(people, db):
    with pytest.raises(ValidationError):
        block_everything(people.board1, "  ")
    with pytest.raises(PermissionDenied):
        block_everything(people.finance1, "panic")
    assert not KillSwitch.objects.exists()
    assert block_everything(people.board1, "INC-13").mode == "block"


# ---- the admin pages --------------------------------------------------------------------------

def test_board_members_see_the_dashboard_and_reviewers_do_not(client, people, submit):
    submit("waiting", **BIG_REFUND)

    client.force_login(people.board1)
    board_page = client.get(reverse("admin:index"))
    client.force_login(people.finance1)
    reviewer_page = client.get(reverse("admin:index"))

    assert board_page.status_code == reviewer_page.status_code == 200
    assert b'id="board-dashboard"' in board_page.content and b"<svg" in board_page.content
    assert b'id="board-dashboard"' not in reviewer_page.content


def test_approve_as_rule_button_drafts_the_recomputed_suggestion(client, people, matrix, decided_record):
    decided_record(board.RULE_MIN_SAMPLE, confidence=0.97)
    client.force_login(people.board1)

    response = client.post(reverse("admin:board_approve_as_rule"),
                           {"agent": "crm-assistant", "action": "update_account", "connector": "crm"})

    draft = ApprovalMatrix.objects.get(status=MatrixStatus.DRAFT)
    assert response.status_code == 302 and response["Location"] == reverse("admin:policies_approvalmatrix_change", args=[draft.pk])
    assert draft.rules.get(name="auto-update_account-by-crm-assistant").confidence_min == 0.97


def test_reviewers_cannot_draft_rules_from_the_dashboard(client, people, matrix, decided_record):
    decided_record(board.RULE_MIN_SAMPLE, confidence=0.97)
    client.force_login(people.finance1)

    response = client.post(reverse("admin:board_approve_as_rule"),
                           {"agent": "crm-assistant", "action": "update_account", "connector": "crm"})

    assert response.status_code == 403
    assert not ApprovalMatrix.objects.filter(status=MatrixStatus.DRAFT).exists()


def test_approve_as_rule_refuses_a_suggestion_the_record_does_not_hold(client, people, submit):
    client.force_login(people.board1)

    response = client.post(reverse("admin:board_approve_as_rule"),
                           {"agent": "refund-bot", "action": "refund", "connector": "helpdesk"}, follow=True)

    assert b"no longer holds" in response.content
    assert not ApprovalMatrix.objects.filter(status=MatrixStatus.DRAFT).exists()


def test_the_kill_switch_page_shows_who_engaged_what_why_and_since(client, people, db):
    stop_all_automation(people.board1, "INC-21: refunds to wrong customers")
    client.force_login(people.operator)

    page = client.get(reverse("admin:policies_killswitch_changelist")).content.decode()

    engaged = page[page.index('id="engaged-switches"'):page.index("</table>", page.index('id="engaged-switches"'))]
    assert "everything" in engaged and "forces review" in engaged
    assert "INC-21: refunds to wrong customers" in engaged and "board1" in engaged
    assert "1 kill switch" in page and "kill switchs" not in page


def test_block_everything_from_the_kill_switch_page(client, people, db):
    client.force_login(people.board1)

    response = client.post(reverse("admin:policies_killswitch_global", args=["block-all"]), {"reason": "INC-22"}, follow=True)

    switch = KillSwitch.objects.get()
    assert (switch.scope, switch.mode, switch.reason, switch.changed_by) == ("global", "block", "INC-22", people.board1)
    assert b"Everything is blocked" in response.content


def test_a_global_switch_without_a_reason_or_permission_engages_nothing(client, people, db):
    client.force_login(people.board1)
    no_reason = client.post(reverse("admin:policies_killswitch_global", args=["stop-all"]), {"reason": " "}, follow=True)
    client.force_login(people.finance1)
    no_permission = client.post(reverse("admin:policies_killswitch_global", args=["stop-all"]), {"reason": "x"})

    assert b"Nothing engaged" in no_reason.content
    assert no_permission.status_code == 403
    assert not KillSwitch.objects.exists()


# ---- a fixed number of queries, however many proposals ----------------------------------------

def _index_queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:index"))
    assert response.status_code == 200 and b'id="board-dashboard"' in response.content
    return len(queries)


def test_the_dashboard_answers_in_the_same_number_of_queries_at_100000_proposals(client, people, matrix):
    from bench.records import insert_proposals

    client.force_login(people.board1)
    record = {"integration_id": submit_integration(), "connectors": {c.slug: c.pk for c in Connector.objects.all()},
              "review_group_id": Group.objects.get(name="sales").pk,
              "reviewer_ids": [people.sales1.pk, people.support1.pk, people.finance1.pk]}
    insert_proposals(50, batch="few", **record)
    board_days.refresh(everything=True)  # as beat leaves it (bulk rows have no history to notice them by)
    few = _index_queries(client)
    insert_proposals(100_000, batch="many", **record)
    board_days.refresh(everything=True)
    assert Proposal.objects.count() >= 100_000 and Proposal.objects.filter(status=Status.PENDING_REVIEW).count() >= 10_000
    assert Review.objects.count() >= 30_000

    many = _index_queries(client)

    assert many == few <= 20


def submit_integration() -> int:
    from approvals.models import Integration

    return Integration.objects.get_or_create(name="bench-agents")[0].pk
