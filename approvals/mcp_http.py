"""Serving the MCP gateway over Streamable HTTP at /mcp/, from Django itself (runserver, WSGI or ASGI).

Stateless JSON mode of the MCP SDK's session manager: each POST is one JSON-RPC exchange with a
JSON answer, so a plain Django view can hand it to the SDK's ASGI handler and return what it
sends. The API key is checked here, like the API's (401 without a valid one), and handed to the
tools through a context variable.
"""

from __future__ import annotations

from typing import Any

import anyio
from asgiref.sync import async_to_sync
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from rest_framework.exceptions import AuthenticationFailed

from approvals import mcp_gateway
from approvals.api_auth import ApiKeyAuthentication
from approvals.models import ApiKey

SERVER = mcp_gateway.server()
# Django already checks the Host header (ALLOWED_HOSTS) before this view runs.
SECURITY = TransportSecuritySettings(enable_dns_rebinding_protection=False)


@csrf_exempt
def endpoint(request: HttpRequest) -> HttpResponse:
    try:
        found = ApiKeyAuthentication().authenticate(request)
    except AuthenticationFailed as exc:
        return _unauthorized(str(exc.detail))
    if found is None:
        return _unauthorized("an API key is required: 'Authorization: Bearer <api key>'")
    status, headers, body = async_to_sync(_serve)(_scope(request), request.body, found[1])
    response = HttpResponse(body, status=status)
    for name, value in headers:
        if name.lower() not in (b"content-length", b"connection", b"transfer-encoding"):
            response[name.decode("latin-1")] = value.decode("latin-1")
    return response


def _unauthorized(message: str) -> JsonResponse:
    response = JsonResponse({"errors": {"detail": [message]}, "detail": message}, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="hitlgov"'
    return response


def _scope(request: HttpRequest) -> dict[str, Any]:
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in request.headers.items()]
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
        "scheme": request.scheme, "path": request.path, "raw_path": request.path.encode(), "root_path": "",
        "query_string": request.META.get("QUERY_STRING", "").encode("latin-1"), "headers": headers,
        "server": (request.get_host().rsplit(":", 1)[0], int(request.get_port() or 80)),
        "client": (request.META.get("REMOTE_ADDR", ""), 0),
    }


async def _serve(scope: dict[str, Any], body: bytes, key: ApiKey) -> tuple[int, list, bytes]:
    """Run one request through the SDK's stateless handler and collect its (JSON) answer."""
    answer: dict[str, Any] = {"status": 500, "headers": [], "body": []}
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await anyio.sleep_forever()  # the client stays connected until the answer is complete
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"], answer["headers"] = message["status"], list(message.get("headers") or [])
        elif message["type"] == "http.response.body":
            answer["body"].append(message.get("body", b""))

    token = mcp_gateway.current_key.set(key)
    try:
        # One manager per request: stateless mode keeps nothing between requests, and a manager runs once.
        manager = StreamableHTTPSessionManager(app=SERVER, json_response=True, stateless=True, security_settings=SECURITY)
        async with manager.run():
            await manager.handle_request(scope, receive, send)
    finally:
        mcp_gateway.current_key.reset(token)
    return answer["status"], answer["headers"], b"".join(answer["body"])
