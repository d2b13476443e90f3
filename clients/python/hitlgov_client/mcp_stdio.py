"""`hitlgov-mcp`: HITL Gov's MCP gateway over stdio, for local agent set-ups (Claude Desktop, IDEs).

It serves the same tools as the product's Streamable HTTP endpoint by forwarding each request
there with your API key, so the product decides, records and audits every call exactly as it
does for HTTP clients. Needs the `mcp` extra: `pip install 'hitlgov-client[mcp]'`.

    HITLGOV_URL=http://127.0.0.1:8000 HITLGOV_API_KEY=hitl_... hitlgov-mcp
"""

from __future__ import annotations

import os
import sys
from contextlib import asynccontextmanager

import anyio


def endpoint(base_url: str) -> str:
    return base_url.rstrip("/") + "/mcp/"


def build_server(base_url: str, api_key: str):
    """A stdio-servable MCP server whose tools are the product's, forwarded to its /mcp/ endpoint."""
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.lowlevel import Server
    from mcp.shared._httpx_utils import create_mcp_http_client

    @asynccontextmanager
    async def product():
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {api_key}"})
        async with http, Client(streamable_http_client(endpoint(base_url), http_client=http)) as client:
            yield client

    async def list_tools(ctx, params):
        async with product() as client:
            listed = await client.list_tools(cursor=params.cursor if params else None)
        return listed

    async def call_tool(ctx, params):
        async with product() as client:
            return await client.call_tool(params.name, params.arguments or {})

    return Server("hitlgov", version="1", on_list_tools=list_tools, on_call_tool=call_tool,
                  instructions="Tools governed by HITL Gov: a call may run, wait for a human's approval, or be blocked.")


async def serve(base_url: str, api_key: str) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(base_url, api_key)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def main() -> None:
    base_url, api_key = os.environ.get("HITLGOV_URL", ""), os.environ.get("HITLGOV_API_KEY", "")
    if not base_url or not api_key:
        sys.exit("hitlgov-mcp: set HITLGOV_URL (e.g. http://127.0.0.1:8000) and HITLGOV_API_KEY")
    anyio.run(serve, base_url, api_key)


if __name__ == "__main__":
    main()
