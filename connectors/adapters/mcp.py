"""An upstream MCP server as a system of record: each of its tools is an action, and an approved
call is one `tools/call` (the official `mcp` SDK's client, Streamable HTTP).

Config (set in the admin; `tools` is written by `connectors.services.refresh_mcp_tools`):
- `url`: the upstream's MCP endpoint (checked like every outbound address);
- `tools`: tool name -> {description, input_schema}, as the upstream last listed them;
- `read_only_tools`: tools the board marks read-only (capability `read`); any other tool is a `call`;
- `compensating_tools`: tool -> the tool that undoes it (rollback calls it: `compensate_call`). A tool
  without one is irreversible.
Credentials: `token` (optional), a reference (env:/file:) to a bearer token for the upstream.

A tool call cannot be made idempotent (MCP has no idempotency key), so the kind is
`at_most_once`: the executor holds a call whose outcome is unknown for an operator instead of
sending it again. An answer with `isError` is a permanent failure; a failure to connect (before
the call was sent) is transient; a failure after sending means the outcome is unknown.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import anyio

from .base import (
    CAPABILITIES, ActionFacts, Adapter, FieldChange, Health, PermanentError, Preview, Target, TransientError, WriteResult, register,
)

CALL_TIMEOUT_SECONDS = 60.0


class OutcomeUnknown(PermanentError):
    """The call was sent but no answer came back: the upstream may or may not have acted."""


@dataclass(frozen=True)
class ToolPreview(Preview):
    """The call's arguments, and how (or whether) it can be undone."""

    compensating_tool: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "compensating_tool": self.compensating_tool or None,
                "irreversible": not self.compensating_tool}


@register
class McpAdapter(Adapter):
    kind = "mcp"
    capabilities = frozenset(CAPABILITIES)
    actions: Mapping[str, str] = {}
    at_most_once = True
    base_url_key = "url"

    def __init__(self, config: Mapping[str, Any] | None = None, secrets: Mapping[str, str] | None = None):
        super().__init__(config, secrets)
        read_only = set(self.config.get("read_only_tools") or ())
        tools = self.config.get("tools") or {}
        self.actions = {str(name): ("read" if name in read_only else "call") for name in tools}

    def capability(self, action: str) -> str:
        return self.actions.get(action, "call")

    def action_facts(self, action: str) -> ActionFacts:
        return dataclasses.replace(super().action_facts(action), read_only=self.capability(action) == "read")

    def compensating_tool(self, action: str) -> str:
        return str((self.config.get("compensating_tools") or {}).get(action) or "")

    def read(self, target: Target) -> dict[str, Any]:
        return {}  # a tool call has no record HITL Gov can read before it

    def preview(self, action: str, target: Target | None, changes: Mapping[str, Any]) -> Preview:
        args = tuple(FieldChange(name, None, value) for name, value in changes.items())
        return ToolPreview(changes=args, before={}, compensating_tool=self.compensating_tool(action))

    def execute(self, action: str, target: Target | None, changes: Mapping[str, Any], idempotency_key: str) -> WriteResult:
        result = self.call(action, dict(changes))
        return WriteResult(after={}, request={"tool": action, "arguments": dict(changes)}, response=result)

    def compensate(self, action: str, target: Target | None, before: Mapping[str, Any]) -> WriteResult:
        raise PermanentError(f"undo {action} on the upstream by hand"
                             + (f" with {self.compensating_tool(action)}" if self.compensating_tool(action) else ""))

    def compensate_call(self, action: str, arguments: Mapping[str, Any], result: Any) -> WriteResult:
        """Undo an earlier call with the tool the board named for it: one tools/call whose arguments are
        the original call's, overlaid with what its result returned (create_ticket's `ticket` id for
        delete_ticket), kept to the compensating tool's own input schema when the upstream listed one."""
        tool = self.compensating_tool(action)
        if not tool:
            raise PermanentError(f"{action} is irreversible: no compensating tool is named for it; undo it by hand")
        merged = {**arguments, **(result if isinstance(result, Mapping) else {})}
        schema = ((self.config.get("tools") or {}).get(tool) or {}).get("input_schema") or {}
        accepted = schema.get("properties")
        args = {name: value for name, value in merged.items() if accepted is None or name in accepted}
        return WriteResult(after={}, request={"tool": tool, "arguments": args}, response=self.call(tool, args))

    def health(self) -> Health:
        tools = self.list_tools()
        return Health(ok=True, detail=f"{len(tools)} tools: {', '.join(sorted(tools))[:400]}")

    # ---- the upstream ----------------------------------------------------------------------

    def call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """One tools/call; the structured result (or the text content) as a dict."""
        return anyio.run(self._call, tool, arguments)

    def list_tools(self) -> dict[str, dict[str, Any]]:
        """Tool name -> {description, input_schema, read_only_hint} as the upstream lists them now."""
        return anyio.run(self._list)

    def _url(self) -> str:
        from connectors.outbound import check_url  # every call: a changed address is checked again

        url = str(self.config.get("url") or "")
        if not url:
            raise PermanentError("the MCP connector has no url")
        check_url(url)
        return url

    def _client(self):
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        headers = {"Authorization": f"Bearer {self.secrets['token']}"} if self.secrets.get("token") else {}
        # Well inside the execution lease (EXECUTION_LEASE_SECONDS, 120 s by default): a slow call must fail
        # before the sweep could take the lease over and find it "started".
        http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(30.0, read=CALL_TIMEOUT_SECONDS))
        return http, Client(streamable_http_client(self._url(), http_client=http), read_timeout_seconds=CALL_TIMEOUT_SECONDS)

    async def _list(self) -> dict[str, dict[str, Any]]:
        http, client = self._client()
        try:
            async with http, client:
                listed, cursor = [], None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    listed += page.tools
                    if not (cursor := page.next_cursor):
                        break
        except Exception as exc:
            raise TransientError(f"could not list the upstream's tools: {type(exc).__name__}: {exc}") from None
        return {tool.name: {"description": tool.description or "", "input_schema": tool.input_schema,
                            "read_only_hint": bool(tool.annotations and tool.annotations.read_only_hint)}
                for tool in listed}

    async def _call(self, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        http, client = self._client()
        phase, result = "connecting", None  # until the call is sent, trying again is safe
        try:
            async with http, client:
                phase = "calling"
                result = await client.call_tool(tool, arguments)
        except Exception as exc:
            if phase == "connecting":
                raise TransientError(f"could not reach the upstream MCP server: {type(exc).__name__}: {exc}") from None
            if result is None:
                raise OutcomeUnknown(f"tools/call {tool} was sent but got no answer ({type(exc).__name__}: {exc}): "
                                     "check the upstream before retrying") from None
        text = "\n".join(block.text for block in result.content if getattr(block, "type", "") == "text")
        if result.is_error:
            raise PermanentError(f"the upstream's {tool} answered with an error: {text[:1000]}")
        return _as_result(result.structured_content, text)


def _as_result(structured: Any, text: str) -> dict[str, Any]:
    """The call's result as the Execution stores it: the structured content, else JSON text, else the text."""
    if isinstance(structured, dict):
        return structured
    if structured is not None:
        return {"value": structured}
    try:
        parsed = json.loads(text)
    except ValueError:
        return {"content": text}
    return parsed if isinstance(parsed, dict) else {"value": parsed}
