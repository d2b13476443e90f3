"""The SDK's stdio MCP server (`hitlgov-mcp`), started as a subprocess by the official MCP client,
serves the live product's tools: an auto call's result, a reviewed call pending and then its verdict,
a blocked call's error."""

from __future__ import annotations

import sys

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from approvals import services
from tests.conftest import matrix_spec, rule, sandbox_record, tier

pytestmark = [pytest.mark.matrix(matrix_spec(
    rule("ticket-status-runs-alone", "auto", actions=["set_status"]),
    rule("refunds-need-finance", "review", actions=["refund"], tiers=(tier("finance"),)),
    rule("no-deleting", "block", actions=["delete_record"]),
))]


def test_a_local_agent_uses_the_gateway_over_stdio(live_server, api, matrix, people):
    stdio = StdioServerParameters(command=sys.executable, args=["-m", "hitlgov_client.mcp_stdio"],
                                  env={"HITLGOV_URL": live_server.url, "HITLGOV_API_KEY": api.raw_key})
    seen = {}

    async def main():
        async with Client(stdio) as client:
            seen["tools"] = {tool.name for tool in (await client.list_tools()).tools}
            seen["auto"] = await client.call_tool("helpdesk__set_status", {
                "target": {"type": "ticket", "id": "T-1003"}, "changes": {"status": "solved"}, "confidence": 0.9})
            seen["blocked"] = await client.call_tool("crm__delete_record", {
                "target": {"type": "opportunity", "id": "O-1"}, "confidence": 0.9})
            seen["pending"] = pending = await client.call_tool("helpdesk__refund", {
                "target": {"type": "order", "id": "A-1003"}, "changes": {"status": "refunded", "refund_amount": "20.00"},
                "confidence": 0.9})
            proposal_id = pending.structured_content["proposal_id"]
            await anyio.to_thread.run_sync(lambda: services.record_verdict(proposal_id, people.finance1, "approve"))
            seen["verdict"] = await client.call_tool("hitlgov_status", {"proposal_id": proposal_id})

    anyio.run(main)
    assert {"helpdesk__refund", "helpdesk__set_status", "hitlgov_status"} <= seen["tools"]
    assert seen["auto"].structured_content["status"] == "executed" and not seen["auto"].is_error
    assert sandbox_record("T-1003", "ticket").data["status"] == "solved"
    assert seen["blocked"].is_error and seen["blocked"].structured_content["status"] == "blocked"
    assert seen["pending"].structured_content["status"] == "pending_review" and not seen["pending"].is_error
    assert seen["verdict"].structured_content["status"] == "executed"
