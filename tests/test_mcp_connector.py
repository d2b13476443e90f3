"""A connector of kind `mcp`: an upstream MCP server's tools are the connector's actions, the board's
matrix governs them, and an approved call is one `tools/call`, never two (a real upstream built with
the MCP SDK on a local port counts them; real Celery workers execute, one is killed mid-call)."""

from __future__ import annotations

import os

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied

from approvals import execution, rollback, services
from approvals.models import Proposal, Status
from connectors.models import Connector, Execution
from connectors.services import ConnectorError, adapter_for, refresh_mcp_tools, supported_actions
from tests.conftest import approve_all, matrix_spec, reload, rule, tier, wait_until

pytestmark = [pytest.mark.matrix(matrix_spec(
    rule("ticket-writes-need-support", "review", connectors=["tickets"], actions=["create_ticket", "export_all"],
         tiers=(tier("support"),)),
    rule("no-deleting-upstream", "block", connectors=["tickets"], actions=["delete_ticket"]),
))]

TICKET = {"connector": "tickets", "action": "create_ticket", "target": None, "changes": {"title": "Printer on fire"},
          "amount": None, "currency": None}


def test_refreshing_lists_the_upstream_tools_as_actions(upstream, db):
    admin = get_user_model().objects.create_superuser("root", password="pw")
    connector = Connector.objects.create(slug="tickets", name="Tickets", kind="mcp", config={"url": upstream.url},
                                         credentials={"token": "env:HITL_SECRET_UPSTREAM_TOKEN"})
    refresh_mcp_tools(connector.pk, admin, "first listing")
    connector.refresh_from_db()
    assert supported_actions(connector) == ["create_ticket", "delete_ticket", "export_all", "get_ticket"]
    assert connector.config["tools"]["create_ticket"]["input_schema"]["required"] == ["title"]
    assert connector.config["tools"]["get_ticket"]["read_only_hint"] is True
    assert connector.history.first().history_change_reason == "first listing"
    assert upstream.tool_calls() == []  # listing calls no tool


def test_refreshing_needs_the_change_connector_permission(upstream, people):
    connector = Connector.objects.create(slug="tickets", name="Tickets", kind="mcp", config={"url": upstream.url},
                                         credentials={"token": "env:HITL_SECRET_UPSTREAM_TOKEN"})
    with pytest.raises(PermissionDenied):
        refresh_mcp_tools(connector.pk, people.support1)


def test_a_wrong_token_is_refused_by_the_upstream(upstream, ticket_tools, monkeypatch):
    monkeypatch.setenv("HITL_SECRET_UPSTREAM_TOKEN", "not-the-token")
    with pytest.raises(ConnectorError, match="could not list"):
        adapter_for(ticket_tools).list_tools()
    assert upstream.refused >= 1


def test_the_preview_shows_the_arguments_and_whether_the_call_can_be_undone(ticket_tools, submit):
    proposal = submit("t-1", **TICKET)
    assert proposal.status == Status.PENDING_REVIEW
    assert proposal.preview["changes"] == [{"field": "title", "before": None, "after": "Printer on fire", "sensitive": False}]
    assert proposal.preview["compensating_tool"] == "delete_ticket" and proposal.preview["irreversible"] is False
    export = submit("t-2", **{**TICKET, "action": "export_all", "changes": {"destination": "s3://x"}})
    assert export.preview["irreversible"] is True


def test_read_only_tools_run_alone_and_blocked_or_rejected_calls_never_reach_the_upstream(ticket_tools, submit, people, upstream):
    read = submit("read-1", **{**TICKET, "action": "get_ticket", "changes": {"ticket": "UP-9"}})
    assert read.status == Status.APPROVED  # no rule names it: read-only runs alone by default
    assert read.decision["reasons"] == ["no rule matched: a read-only action runs alone"]
    execution.run(read.pk)
    assert reload(read).status == Status.EXECUTED, read.status_reason
    assert Execution.objects.get(proposal=read).response == {"ticket": "UP-9", "state": "open"}

    blocked = submit("del-1", **{**TICKET, "action": "delete_ticket", "changes": {"ticket": "UP-9"}})
    rejected = submit("t-3", **TICKET)
    services.record_verdict(rejected.pk, people.support1, "reject", "duplicate")
    assert (reload(blocked).status, reload(rejected).status) == (Status.BLOCKED, Status.REJECTED)
    assert upstream.tool_calls() == [("get_ticket", {"ticket": "UP-9"})]


@pytest.mark.matrix(matrix_spec(rule("look-ups-reviewed-too", "review", actions=["get_ticket"], tiers=(tier("support"),))))
def test_a_board_rule_overrides_the_read_only_default_and_unmarked_tools_get_the_matrix_default(ticket_tools, submit):
    assert submit("read-2", **{**TICKET, "action": "get_ticket", "changes": {"ticket": "UP-1"}}).status == Status.PENDING_REVIEW
    ticket_tools.config = {**ticket_tools.config, "read_only_tools": []}
    ticket_tools.save()
    export = submit("export-2", **{**TICKET, "action": "export_all", "changes": {"destination": "s3://x"}})
    assert export.status == Status.PENDING_REVIEW and export.decision["reasons"] == ["no rule matched: default review"]


def test_an_upstream_error_answer_fails_the_execution(ticket_tools, submit, people, upstream):
    proposal = submit("t-4", **{**TICKET, "changes": {"priority": "high"}})  # no title: the upstream refuses
    approve_all(proposal, people)
    execution.run(proposal.pk)
    proposal = reload(proposal)
    assert proposal.status == Status.FAILED and "answered with an error" in proposal.status_reason


def test_rolling_back_a_tool_call_calls_its_compensating_tool_with_what_the_call_returned(
        ticket_tools, submit, people, upstream):
    proposal = submit("t-5", **TICKET)
    approve_all(proposal, people)
    execution.run(proposal.pk)
    assert reload(proposal).status == Status.EXECUTED
    created = upstream.tool_calls()[0]

    result = rollback.rollback_proposal(proposal.pk, people.operator, "wrong queue")

    assert result.outcome == "rolled_back", result.message
    assert reload(proposal).status == Status.ROLLED_BACK
    undo = upstream.tool_calls()[1:]
    assert created[0] == "create_ticket" and undo == [("delete_ticket", {"ticket": "UP-1"})]
    row = proposal.executions.get(kind="compensate")
    assert row.request == {"tool": "delete_ticket", "arguments": {"ticket": "UP-1"}}


def test_rolling_back_a_tool_without_a_compensating_tool_is_refused_as_irreversible(ticket_tools, submit, people, upstream):
    ticket_tools.config = {**ticket_tools.config, "compensating_tools": {}}
    ticket_tools.save()
    proposal = submit("t-5b", **TICKET)
    approve_all(proposal, people)
    execution.run(proposal.pk)

    result = rollback.rollback_proposal(proposal.pk, people.operator, "wrong queue")

    assert result.outcome == "refused" and "irreversible" in result.message
    assert reload(proposal).status == Status.EXECUTED
    assert [name for name, _ in upstream.tool_calls()] == ["create_ticket"]


# ---- real workers ---------------------------------------------------------------------------------

@pytest.mark.worker
def test_an_approved_call_reaches_the_upstream_exactly_once(ticket_tools, submit, people, upstream, start_worker):
    start_worker(HITL_SECRET_UPSTREAM_TOKEN=os.environ["HITL_SECRET_UPSTREAM_TOKEN"])
    proposal = submit("t-6", **TICKET)
    assert upstream.tool_calls() == []
    approve_all(proposal, people)
    wait_until(lambda: reload(proposal).status == Status.EXECUTED, timeout=60, message="the worker's execution")
    assert upstream.tool_calls() == [("create_ticket", {"title": "Printer on fire", "priority": "low"})]
    assert Execution.objects.get(proposal=proposal).response == {"ticket": "UP-1", "title": "Printer on fire"}
    assert execution.run(proposal.pk).status == "nothing to do: executed"
    assert len(upstream.tool_calls()) == 1


@pytest.mark.worker
def test_a_worker_killed_mid_call_leaves_the_call_to_an_operator(ticket_tools, submit, people, upstream, start_worker):
    worker = start_worker(HITL_SECRET_UPSTREAM_TOKEN=os.environ["HITL_SECRET_UPSTREAM_TOKEN"])
    proposal = submit("export-1", **{**TICKET, "action": "export_all", "changes": {"destination": "s3://backup"}})
    approve_all(proposal, people)
    wait_until(lambda: upstream.tool_calls("export_all"), timeout=60, message="the call to reach the upstream")
    worker.kill()  # mid-call: the upstream got it, nobody knows whether it finished

    # The lease runs out and the sweep resumes the execution, as it does for any stuck one.
    Proposal.objects.filter(pk=proposal.pk).update(lease_until=None)
    assert execution.run(proposal.pk).status == "outcome unknown: held for an operator"
    proposal = reload(proposal)
    assert proposal.status == Status.FAILED and proposal.status_reason.startswith("outcome unknown")
    assert Execution.objects.get(proposal=proposal).outcome == Execution.Outcome.FAILED
    assert execution.run(proposal.pk).status == "nothing to do: failed"
    assert len(upstream.tool_calls("export_all")) == 1
