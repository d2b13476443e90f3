"""Kill switches through the real submit path: they tighten at once, release restores, and all is audited."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from approvals import execution, services
from approvals.models import Status
from policies.models import KillSwitch
from policies.services import engage_switch, release_switch
from tests.conftest import SMALL_REFUND, proposal_body, reload
from tests.test_matrix_yaml_commands import board_spec

# `submit` is decided by the board's matrix and sends a small, confident refund unless a test says otherwise.
pytestmark = [pytest.mark.matrix(board_spec()), pytest.mark.proposal(**SMALL_REFUND)]
NOTE = {"connector": "crm", "action": "add_note", "agent": "crm-bot", "target": {"type": "opportunity", "id": "O-1"},
        "changes": {"stage": "Negotiation"}, "amount": None, "currency": None}


def test_without_switches_a_small_confident_refund_runs_automatically(submit):
    proposal = submit()

    assert (proposal.outcome, proposal.status) == ("auto", Status.APPROVED)


def test_a_global_force_review_switch_sends_automatic_work_to_the_default_reviewers(submit):
    engage_switch(scope="global", value="", mode="force_review", reason="INC-9: agents misbehaving")

    proposal = submit()

    assert (proposal.outcome, proposal.status) == ("review", Status.PENDING_REVIEW)
    assert services.active_task(proposal).group.name == "triage"
    assert proposal.decision["rules"] == ["auto-small-refunds"]  # what the matrix said, kept on record
    assert proposal.decision["switches"] == ["global: force_review"]
    assert "kill switch global engaged: force_review (INC-9: agents misbehaving)" in proposal.status_reason


@pytest.mark.parametrize("scope, value", [("connector", "helpdesk"), ("action", "refund"), ("agent", "refund-bot")])
def test_a_scoped_force_review_switch_catches_its_scope_only(submit, scope, value):
    engage_switch(scope=scope, value=value, mode="force_review", reason="looking into refunds")

    caught = submit()
    elsewhere = submit(**NOTE)

    assert caught.outcome == "review"
    assert caught.decision["switches"] == [f"{scope}={value}: force_review"]
    assert (elsewhere.outcome, elsewhere.decision["switches"]) == ("auto", [])


@pytest.mark.parametrize("scope, value", [("global", ""), ("connector", "helpdesk"), ("action", "refund"), ("agent", "refund-bot")])
def test_a_block_switch_blocks_what_it_covers_whatever_the_matrix_says(submit, scope, value):
    engage_switch(scope=scope, value=value, mode="block", reason="refund incident INC-7")

    proposal = submit()

    assert (proposal.outcome, proposal.status) == ("block", Status.BLOCKED)
    assert not proposal.review_tasks.exists()
    assert "INC-7" in proposal.status_reason


def test_a_force_review_switch_leaves_stricter_outcomes_alone(submit):
    engage_switch(scope="connector", value="helpdesk", mode="force_review", reason="watching the helpdesk")

    large = submit(amount="1500.00", changes={"status": "refunded", "refund_amount": "1500.00"})

    assert large.outcome == "review"
    task = services.active_task(large)
    assert (task.group.name, task.required) == ("finance", 2)


def test_releasing_the_switch_restores_automatic_decisions(submit, people):
    switch = engage_switch(scope="action", value="refund", mode="block", reason="INC-7")
    assert submit().outcome == "block"

    release_switch(switch, reason="INC-7 resolved", user=people.board1)

    assert submit().outcome == "auto"


def test_engaging_and_releasing_are_audited_with_the_reason_and_who(people, matrix):
    switch = engage_switch(scope="agent", value="refund-bot", mode="block", reason="INC-11 duplicate refunds", user=people.operator)
    release_switch(switch, reason="INC-11 fixed upstream", user=people.board1)

    engaged, released = switch.history.order_by("history_date")
    assert (engaged.engaged, engaged.history_change_reason, engaged.history_user) == (
        True, "engaged: INC-11 duplicate refunds", people.operator)
    assert (released.engaged, released.history_change_reason, released.history_user) == (
        False, "released: INC-11 fixed upstream", people.board1)


@pytest.mark.parametrize("kwargs, field", [
    ({"scope": "global", "value": "", "mode": "block", "reason": "  "}, "reason"),
    ({"scope": "agent", "value": "", "mode": "block", "reason": "why"}, "value"),
    ({"scope": "team", "value": "x", "mode": "block", "reason": "why"}, "scope"),
    ({"scope": "global", "value": "", "mode": "pause", "reason": "why"}, "mode"),
])
def test_a_switch_that_does_not_say_what_or_why_is_refused_naming_the_field(db, kwargs, field):
    with pytest.raises(ValidationError) as refused:
        engage_switch(**kwargs)

    assert list(refused.value.message_dict) == [field]
    assert not KillSwitch.objects.exists()


def test_an_agent_block_stops_its_approved_work_that_has_not_started(submit):
    approved = submit()
    other = submit(**NOTE)
    assert approved.status == other.status == Status.APPROVED

    engage_switch(scope="agent", value="refund-bot", mode="block", reason="INC-12 refund loop")
    execution.run(approved.pk)
    execution.run(other.pk)

    approved = reload(approved)
    assert approved.status == Status.FAILED
    assert approved.status_reason == "kill switch on agent refund-bot blocks execution: INC-12 refund loop"
    assert reload(other).status == Status.EXECUTED  # another agent's work runs on


def test_a_force_review_switch_sends_policy_approved_work_that_has_not_started_to_reviewers(submit):
    approved = submit()
    assert (approved.outcome, approved.status) == ("auto", Status.APPROVED)

    engage_switch(scope="connector", value="helpdesk", mode="force_review", reason="INC-13 wrong refunds")
    assert execution.run(approved.pk).status == "held for review"

    approved = reload(approved)
    assert approved.status == Status.PENDING_REVIEW
    assert approved.approved_hash == ""
    assert services.active_task(approved).group.name == "triage"
    assert "INC-13 wrong refunds" in approved.status_reason
    assert approved.executions.count() == 0


def post_switch(client, **body):
    return client.post("/api/v1/killswitches/", data=json.dumps(body), content_type="application/json")


def test_the_api_engages_a_switch_that_blocks_the_next_proposal_then_releases_it(matrix, make_client, people):
    operator = make_client("ops-console", scopes=["killswitch:write"], acts_for=people.board1)
    agent = make_client("refund-bot-integration", scopes=["proposals:write", "proposals:read"])
    body = proposal_body(**SMALL_REFUND)

    engaged = post_switch(operator, scope="connector", value="helpdesk", mode="block", reason="INC-13")
    blocked = agent.post("/api/v1/proposals/", data=json.dumps(body), content_type="application/json")
    released = post_switch(operator, scope="connector", value="helpdesk", mode="block", reason="INC-13 over", engaged=False)
    after = agent.post("/api/v1/proposals/", data=json.dumps({**body, "idempotency_key": "after"}), content_type="application/json")

    assert engaged.status_code == 201 and engaged.json()["engaged"] is True
    assert blocked.json()["status"] == "blocked"
    assert released.status_code == 200 and [s["id"] for s in released.json()["released"]] == [engaged.json()["id"]]
    assert after.json()["status"] == "approved"
    reasons = list(KillSwitch.history.order_by("history_date").values_list("history_change_reason", flat=True))
    assert reasons == ["engaged: INC-13 (via API key of ops-console)", "released: INC-13 over (via API key of ops-console)"]


def test_a_key_with_no_person_behind_it_engages_but_cannot_release_a_switch(matrix, make_client, people):
    """Tightening is always safe; loosening what the board engaged needs a person allowed to."""
    robot = make_client("ops-robot", scopes=["killswitch:write"])
    reviewer = make_client("reviewer-console", scopes=["killswitch:write"], acts_for=people.finance1)
    engaged = post_switch(robot, scope="global", mode="block", reason="INC-21")

    refused = post_switch(robot, scope="global", mode="block", reason="let it run", engaged=False)
    refused_too = post_switch(reviewer, scope="global", mode="block", reason="let it run", engaged=False)

    assert engaged.status_code == 201
    assert refused.status_code == 403 and "may not release" in refused.json()["detail"]
    assert refused_too.status_code == 403
    assert KillSwitch.objects.get().engaged is True


def test_the_api_refuses_a_key_without_the_killswitch_scope(matrix, make_client):
    agent = make_client("refund-bot-integration", scopes=["proposals:write", "proposals:read"])

    response = post_switch(agent, scope="global", mode="block", reason="an agent must not switch others off")

    assert response.status_code == 403
    assert not KillSwitch.objects.exists()
