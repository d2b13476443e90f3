"""A real upstream MCP server for the gateway tests, built with the official SDK and served by
uvicorn on a local port in a thread of the test process, so a test can count the calls it got.

Tools: create_ticket (writes), get_ticket (read-only), delete_ticket (undoes create_ticket) and
export_all, which holds its answer until the test releases it (a call a worker can die in).
Requests without the bearer token are refused (401) and counted.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

TOKEN = "upstream-token-1234"


class Upstream:
    def __init__(self, token: str = TOKEN):
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refused = 0
        self.release = threading.Event()
        self.token = token
        mcp = MCPServer("upstream-tickets")

        @mcp.tool(description="Open a ticket")
        def create_ticket(title: str, priority: str = "low") -> dict:
            self.calls.append(("create_ticket", {"title": title, "priority": priority}))
            return {"ticket": f"UP-{len(self.calls)}", "title": title}

        @mcp.tool(description="Read a ticket", annotations=ToolAnnotations(read_only_hint=True))
        def get_ticket(ticket: str) -> dict:
            self.calls.append(("get_ticket", {"ticket": ticket}))
            return {"ticket": ticket, "state": "open"}

        @mcp.tool(description="Delete a ticket")
        def delete_ticket(ticket: str) -> dict:
            self.calls.append(("delete_ticket", {"ticket": ticket}))
            return {"deleted": ticket}

        @mcp.tool(description="Export every ticket somewhere")
        async def export_all(destination: str) -> dict:
            self.calls.append(("export_all", {"destination": destination}))
            while not self.release.is_set():  # the test lets it answer (or never: the caller dies first)
                await anyio.sleep(0.05)
            return {"exported_to": destination}

        self.app = self._guarded(mcp.streamable_http_app(stateless_http=True, json_response=True))
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def _guarded(self, app):
        async def guarded(scope, receive, send):
            if scope["type"] == "http" and dict(scope["headers"]).get(b"authorization") != f"Bearer {self.token}".encode():
                self.refused += 1
                await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"bad token"})
                return
            await app(scope, receive, send)

        return guarded

    def start(self) -> Upstream:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the upstream MCP server did not start")
            time.sleep(0.02)
        return self

    @property
    def url(self) -> str:
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/mcp"

    def stop(self) -> None:
        self.release.set()
        self.server.should_exit = True
        self.thread.join(10)

    def tool_calls(self, name: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        return [call for call in self.calls if name is None or call[0] == name]
