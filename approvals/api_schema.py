"""What drf-spectacular cannot infer about the API: the bearer key and the error body every failure shares."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "approvals.api_auth.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An integration's API key: `Authorization: Bearer <key>`"}


# The contract's error shape: field errors, a one-line summary, and for a 500 an id to quote.
ERROR = {
    "type": "object",
    "required": ["errors"],
    "properties": {
        # A field's messages; for nested input (target, evidence items) the same shape one level down.
        "errors": {"type": "object", "additionalProperties": {"anyOf": [
            {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "object"}]}}, {"type": "object"}]}},
        "detail": {"type": "string"},
        "id": {"type": "string", "description": "a 500's id, to quote when reporting it"},
    },
}
ERROR_STATUSES = {
    "400": "Bad input: `errors` names each field", "401": "No valid API key", "403": "The key lacks the scope or the right",
    "404": "No such resource (or not this integration's)", "405": "Method not allowed", "409": "Conflicts with the current state",
    "413": "Body too large", "415": "Unsupported media type", "429": "Over the rate limit; see Retry-After",
    "500": "Unexpected error; `id` to quote",
}
NULLABLE_OBJECT = {"type": "object", "nullable": True, "additionalProperties": {}}


def document_errors(result: dict[str, Any], generator, request, public) -> dict[str, Any]:
    """drf-spectacular post-processing hook: every operation may answer every error, in one shape."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for code, description in ERROR_STATUSES.items():
                operation.setdefault("responses", {}).setdefault(code, {"description": description, "content": body})
    return result
