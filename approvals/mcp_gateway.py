"""The MCP gateway: every connector action an integration may use is an MCP tool, and a call is a
proposal decided by the same policy (a front end: it only translates into services.submit_proposal).

- auto: the call waits (up to MCP_AUTO_WAIT_SECONDS) for the execution and returns its result;
- review / triage: a "waiting for approval" result with the proposal id and due time; the
  `hitlgov_status` tool returns the verdict and the result later;
- block: an error result with the policy's reasons.

Served over Streamable HTTP by `approvals.mcp_http` (and over stdio by the SDK's `hitlgov-mcp`,
which forwards to that endpoint). Handlers are async (the MCP SDK's); the ORM work runs through
`sync_to_async`, in the request's own thread.
"""

from __future__ import annotations

import contextvars
import json
import time
import uuid
from typing import Any

import anyio
import mcp_types as types
from asgiref.sync import sync_to_async
from django.conf import settings
from mcp.server.lowlevel import Server

from approvals import api_input, services
from approvals.models import ApiKey, Proposal, Status
from approvals.serializers import ProposalInputSerializer
from connectors.models import Connector
from connectors.services import adapter_capability, executed_by_client, supported_actions

STATUS_TOOL = "hitlgov_status"
SEPARATOR = "__"
WAITING = frozenset({Status.APPROVED, Status.EXECUTING})  # auto: decided, the write is under way
UNDECIDED = frozenset({Status.PENDING_REVIEW, Status.TRIAGE, Status.STALE})

# The API key of the request being served (set by approvals.mcp_http for each request).
current_key: contextvars.ContextVar[ApiKey] = contextvars.ContextVar("hitlgov_mcp_key")

PROPOSAL_PROPERTIES: dict[str, Any] = {
    "target": {"type": "object", "description": "The record acted on",
               "properties": {"type": {"type": "string"}, "id": {"type": "string"}}, "required": ["type", "id"]},
    "changes": {"type": "object", "description": "The exact planned change: field (or argument) to new value"},
    "confidence": {"type": "number", "minimum": 0, "maximum": 1, "description": "How sure the agent is, 0 to 1"},
    "rationale": {"type": "string", "description": "Why, for the reviewers"},
    "evidence": {"type": "array", "description": "Sources the agent used", "items": {
        "type": "object", "required": ["title"],
        "properties": {"title": {"type": "string"}, "url": {"type": "string"}, "excerpt": {"type": "string"}}}},
    "amount": {"type": "string", "description": "Money involved, a decimal string"},
    "currency": {"type": "string", "description": "ISO 4217 code, required with amount"},
    "customer_impact": {"type": "string", "enum": ["none", "low", "medium", "high"]},
    "idempotency_key": {"type": "string", "description": "The same key again returns the first proposal"},
}


# ---- tools ----------------------------------------------------------------------------------

def tool_name(connector: Connector, action: str) -> str:
    return f"{connector.slug}{SEPARATOR}{action}"


def governed_tools() -> dict[str, tuple[Connector, str]]:
    """Tool name -> (connector, action) for every enabled connector action the gateway can carry out.
    Client-executed connectors are left out: an MCP caller has no way to report their outcome."""
    tools = {}
    for connector in Connector.objects.filter(enabled=True).order_by("slug"):
        if executed_by_client(connector):
            continue
        for action in supported_actions(connector):
            tools[tool_name(connector, action)] = (connector, action)
    return tools


def tool_definitions() -> list[types.Tool]:
    tools = [_tool(name, connector, action) for name, (connector, action) in governed_tools().items()]
    tools.append(types.Tool(
        name=STATUS_TOOL, description="The verdict and result of a proposal an earlier tool call made (by its id).",
        input_schema={"type": "object", "properties": {"proposal_id": {"type": "string"}}, "required": ["proposal_id"]},
        annotations=types.ToolAnnotations(read_only_hint=True),
    ))
    return tools


def _tool(name: str, connector: Connector, action: str) -> types.Tool:
    capability = adapter_capability(connector, action)
    upstream = ((connector.config or {}).get("tools") or {}).get(action) or {}
    properties = dict(PROPOSAL_PROPERTIES)
    if upstream.get("input_schema"):  # an upstream MCP tool: the change is its arguments
        properties["changes"] = {**upstream["input_schema"], "description": "The tool's arguments"}
    required = ["confidence"]
    required += ["target"] if capability in ("update", "delete") else []
    required += ["changes"] if capability not in ("read", "delete") else []
    what = upstream.get("description") or f"{action} on {connector.name} ({capability})"
    return types.Tool(
        name=name,
        description=f"{what}. Governed by HITL Gov: the call is a proposal the approval matrix decides; it may "
                    f"answer 'waiting for approval' with a proposal id to check later with {STATUS_TOOL}.",
        input_schema={"type": "object", "properties": properties, "required": required},
        annotations=types.ToolAnnotations(read_only_hint=capability == "read", destructive_hint=capability == "delete"),
    )


# ---- calls ----------------------------------------------------------------------------------

def submit_call(key: ApiKey, name: str, arguments: dict[str, Any]) -> Proposal | dict[str, list[str]]:
    """Validate a tool call as the API validates a proposal and submit it; the field errors if it is refused."""
    if "proposals:write" not in key.scope_set:
        return {"detail": ["this API key lacks the scope proposals:write"]}
    found = governed_tools().get(name)
    if found is None:
        return {"tool": [f"no tool {name!r}"]}
    connector, action = found
    if unknown := sorted(set(arguments) - set(PROPOSAL_PROPERTIES)):
        return {name_: ["unknown argument"] for name_ in unknown}
    if unstorable := api_input.problems(arguments):  # the API's own edge check: NUL, lone surrogates, NaN, depth
        return unstorable
    data = dict(arguments)
    data.setdefault("idempotency_key", f"mcp:{uuid.uuid4()}")
    data.update(connector=connector.slug, action=action, agent=key.integration.name)
    incoming = ProposalInputSerializer(data=data)
    if not incoming.is_valid():
        return {field: [str(m) for m in (messages if isinstance(messages, list) else [messages])]
                for field, messages in incoming.errors.items()}
    validated = dict(incoming.validated_data)
    validated["target"] = dict(validated["target"]) if validated.get("target") else None
    validated["evidence"] = [dict(item) for item in validated.get("evidence", [])]
    try:
        proposal, _ = services.submit_proposal(key.integration, validated)
    except services.IdempotencyConflict as exc:
        return {"idempotency_key": [str(exc)]}
    return proposal


def proposal_of(key: ApiKey, proposal_id: str) -> Proposal | None:
    try:
        return Proposal.objects.select_related("connector").get(pk=uuid.UUID(str(proposal_id)), integration=key.integration)
    except (ValueError, Proposal.DoesNotExist):
        return None


def summary(proposal: Proposal) -> dict[str, Any]:
    """What a tool result says about a proposal (its structured content)."""
    execution = proposal.executions.order_by("-started_at", "-id").first()
    active = proposal.review_tasks.filter(state="active").order_by("position").first()
    due = (active.due_at if active else None) or proposal.due_at
    return {
        "proposal_id": str(proposal.pk), "status": proposal.status, "status_reason": proposal.status_reason,
        "outcome": proposal.outcome, "reasons": list((proposal.decision or {}).get("reasons") or []),
        "due_at": due.isoformat() if due else None,
        "result": execution.response if execution else None, "error": execution.error if execution else "",
    }


def result_for(proposal: Proposal) -> types.CallToolResult:
    """A tool result for a proposal as it stands: done, waiting for approval, or refused."""
    data = summary(proposal)
    if proposal.status == Status.BLOCKED:
        text = f"Blocked by policy: {'; '.join(data['reasons']) or proposal.status_reason}"
        return _result(text, data, error=True)
    if proposal.status in UNDECIDED:
        text = (f"Waiting for approval: proposal {data['proposal_id']} is {proposal.status}"
                + (f", due {data['due_at']}" if data["due_at"] else "") + f". Call {STATUS_TOOL} later for the verdict.")
        return _result(text, data)
    if proposal.status in WAITING:
        return _result(f"Approved; execution of proposal {data['proposal_id']} is under way. "
                       f"Call {STATUS_TOOL} later for the result.", data)
    if proposal.status in (Status.EXECUTED, Status.DRY_RUN, Status.HANDLED_MANUALLY):
        return _result(f"{proposal.status}: {json.dumps(data['result'], default=str)}", data)
    return _result(f"{proposal.status}: {proposal.status_reason}", data,
                   error=proposal.status in (Status.FAILED, Status.REJECTED, Status.EXPIRED, Status.CANCELLED))


def _result(text: str, data: dict[str, Any], error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=data, is_error=error)


def _error(errors: dict[str, list[str]]) -> types.CallToolResult:
    text = "Refused: " + "; ".join(f"{field}: {', '.join(messages)}" for field, messages in errors.items())
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content={"errors": errors},
                                is_error=True)


# ---- the MCP server ---------------------------------------------------------------------------

async def list_tools(ctx, params) -> types.ListToolsResult:
    return types.ListToolsResult(tools=await sync_to_async(tool_definitions)())


async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
    key = current_key.get()
    arguments = params.arguments or {}
    if params.name == STATUS_TOOL:
        proposal = await sync_to_async(proposal_of)(key, arguments.get("proposal_id", ""))
        if proposal is None:
            return _error({"proposal_id": ["no such proposal of this integration"]})
        return await sync_to_async(result_for)(proposal)
    submitted = await sync_to_async(submit_call)(key, params.name, arguments)
    if isinstance(submitted, dict):
        return _error(submitted)
    return await sync_to_async(result_for)(await _executed(submitted))


async def _executed(proposal: Proposal) -> Proposal:
    """An approved proposal once its execution ended, or as it stands after MCP_AUTO_WAIT_SECONDS."""
    deadline = time.monotonic() + float(getattr(settings, "MCP_AUTO_WAIT_SECONDS", 30))
    pause = 0.05
    while proposal.status in WAITING and time.monotonic() < deadline:
        await anyio.sleep(pause)  # the worker writes in another process: poll, a little slower each time
        pause = min(pause * 2, 1.0)
        proposal = await sync_to_async(Proposal.objects.select_related("connector").get)(pk=proposal.pk)
    return proposal


def server() -> Server:
    return Server("hitlgov", version="1", instructions=(
        "Each tool is an action on a business system, governed by HITL Gov's approval matrix. A call may run at "
        f"once, wait for a human's approval (check it later with {STATUS_TOOL}), or be blocked."),
        on_list_tools=list_tools, on_call_tool=call_tool)
