"""The MCP gateway at /mcp/: an MCP client from the official SDK lists the product's tools over
Streamable HTTP, gets a result for an auto call, a pending result and later the verdict for a
reviewed call, and an error for a blocked one; API keys authenticate it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from approvals import services
from approvals.models import Proposal, Status
from tests.conftest import matrix_spec, reload, rule, sandbox_record, tier

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.matrix(matrix_spec(
    rule("ticket-status-runs-alone", "auto", actions=["set_status"]),
    rule("refunds-need-finance", "review", actions=["refund"], tiers=(tier("finance"),)),
    rule("no-deleting", "block", actions=["delete_record"], description="agents never delete"),
))]


def run_client(url: str, key: str, work):
    """Connect the official MCP client to the gateway with this API key and run `work(client)`."""
    async def main():
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
        async with http, Client(streamable_http_client(url, http_client=http)) as client:
            return await work(client)

    return anyio.run(main)


@pytest.fixture
def gateway(live_server, api, matrix):
    return f"{live_server.url}/mcp/", api.raw_key


def test_tools_are_the_connector_actions_with_the_proposal_schema(gateway):
    tools = run_client(*gateway, lambda client: client.list_tools())
    by_name = {tool.name: tool for tool in tools.tools}
    assert {"helpdesk__refund", "helpdesk__set_status", "crm__update_opportunity", "email__send_email",
            "hitlgov_status"} <= set(by_name)
    refund = by_name["helpdesk__refund"]
    assert {"target", "changes", "confidence", "rationale", "evidence"} <= set(refund.input_schema["properties"])
    assert refund.input_schema["required"] == ["confidence", "target", "changes"]


def test_auto_call_waits_for_the_execution_and_returns_its_result(gateway):
    result = run_client(*gateway, lambda client: client.call_tool("helpdesk__set_status", {
        "target": {"type": "ticket", "id": "T-1001"}, "changes": {"status": "solved"}, "confidence": 0.9}))
    assert not result.is_error, result.content
    assert result.structured_content["status"] == "executed"
    assert sandbox_record("T-1001", "ticket").data["status"] == "solved"
    proposal = Proposal.objects.get(pk=result.structured_content["proposal_id"])
    assert proposal.agent == "refund-bot-integration" and proposal.decision["rule"] == "ticket-status-runs-alone"


def test_reviewed_call_is_pending_and_the_status_tool_gives_the_verdict_later(gateway, people):
    refund = {"target": {"type": "order", "id": "A-1002"}, "changes": {"status": "refunded", "refund_amount": "50.00"},
              "confidence": 0.8, "rationale": "damaged"}
    pending = run_client(*gateway, lambda client: client.call_tool("helpdesk__refund", refund))
    assert not pending.is_error
    assert pending.structured_content["status"] == "pending_review" and pending.structured_content["due_at"]
    assert "Waiting for approval" in pending.content[0].text
    proposal_id = pending.structured_content["proposal_id"]

    services.record_verdict(proposal_id, people.finance1, "approve")  # eager: executed on commit
    status = run_client(*gateway, lambda client: client.call_tool("hitlgov_status", {"proposal_id": proposal_id}))
    assert status.structured_content["status"] == "executed"
    assert sandbox_record("A-1002").data["refund_amount"] == "50.00"


def test_blocked_call_is_an_error_with_the_policy_reasons(gateway):
    result = run_client(*gateway, lambda client: client.call_tool("crm__delete_record", {
        "target": {"type": "opportunity", "id": "O-1"}, "confidence": 0.99}))
    assert result.is_error
    assert result.structured_content["status"] == "blocked"
    assert "Blocked by policy" in result.content[0].text
    assert reload(Proposal.objects.get()).status == Status.BLOCKED


def test_bad_arguments_are_an_error_naming_the_field_and_store_nothing(gateway):
    async def calls(client):
        return [await client.call_tool("helpdesk__refund", {
                    "target": {"type": "order", "id": "A-1002"}, "changes": {"status": "refunded"}, "confidence": 7}),
                await client.call_tool("helpdesk__refund", {
                    "target": {"type": "order", "id": "A-1002"}, "changes": {"note": "a\u0000b"}, "confidence": 0.5}),
                await client.call_tool("helpdesk__nope", {"confidence": 0.5})]

    range_error, nul_error, unknown_tool = run_client(*gateway, calls)
    assert range_error.is_error and "confidence" in range_error.structured_content["errors"]
    assert nul_error.is_error and "NUL" in nul_error.structured_content["errors"]["changes.note"][0]
    assert unknown_tool.is_error and "tool" in unknown_tool.structured_content["errors"]
    assert not Proposal.objects.exists()


def test_the_gateway_needs_a_valid_api_key(gateway):
    url, _ = gateway
    response = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                          headers={"Authorization": "Bearer hitl_wrong", "Accept": "application/json, text/event-stream"})
    assert response.status_code == 401
    assert response.json()["detail"] == "unknown or revoked API key"


def test_a_kill_switch_blocks_tool_calls_like_any_proposal(gateway, people):
    from policies.services import engage_switch

    engage_switch(scope="connector", value="helpdesk", mode="block", reason="incident 42", user=people.operator)
    result = run_client(*gateway, lambda client: client.call_tool("helpdesk__set_status", {
        "target": {"type": "ticket", "id": "T-1001"}, "changes": {"status": "solved"}, "confidence": 0.9}))
    assert result.is_error and result.structured_content["status"] == "blocked"
    assert sandbox_record("T-1001", "ticket").data["status"] == "open"


def test_upstream_mcp_tools_are_offered_with_their_own_argument_schema(gateway, ticket_tools, upstream):
    tools = {tool.name: tool for tool in run_client(*gateway, lambda client: client.list_tools()).tools}
    create = tools["tickets__create_ticket"]
    assert create.input_schema["properties"]["changes"]["required"] == ["title"]
    assert create.input_schema["required"] == ["confidence", "changes"]
    assert tools["tickets__get_ticket"].annotations.read_only_hint is True
    assert "Open a ticket" in create.description


def test_a_web_worker_loads_the_mcp_sdk_only_once_mcp_is_called(tmp_path):
    """The SDK costs a web worker about 34 MB: one that only serves the API and the admin never pays it."""
    script = """
import sys, django
django.setup()
from django.test import RequestFactory
from django.urls import resolve
for url in ("/api/v1/proposals/", "/admin/", "/healthz", "/metrics", "/notifications/slack/actions/"):
    resolve(url)
print("before", "mcp" in sys.modules)
answer = resolve("/mcp/").func(RequestFactory().post("/mcp/", data=b"{}", content_type="application/json"))
print("after", "mcp" in sys.modules, answer.status_code)
"""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "hitlgov.settings", "DEBUG": "True", "HITL_VAR_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-3:-1] == ["before False", "after True 401"], result.stdout
