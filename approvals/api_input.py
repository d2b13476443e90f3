"""The API's input edge: request bodies and query strings are checked before any view sees them.

Text that a database or an encoder cannot hold is refused here, with a 400 naming where it
was, so nothing is half-stored and no later read crashes on it:

- a lone UTF-16 surrogate ("\\ud800" sent as a JSON escape): Python keeps it in a str, but
  it cannot be encoded as UTF-8, so every later response, admin page and export would fail;
- a NUL character ("\\u0000"): PostgreSQL refuses it in text and JSON;
- a non-finite number (NaN, Infinity, or a literal too large for a float): not JSON, and
  PostgreSQL's jsonb refuses it;
- JSON nested deeper than API_MAX_JSON_DEPTH: deep nesting is only ever an attack, and
  Python's own recursion limit would otherwise turn it into a 500.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import HttpResponseBadRequest, JsonResponse
from rest_framework import exceptions, parsers

MAX_ERRORS = 10
_SURROGATE = re.compile("[\ud800-\udfff]")
_SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def text_problem(text: str) -> str:
    """Why this text cannot be stored, or ''. Never echoes the text itself."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if _SURROGATE.search(text):
        return "contains a lone UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode text"
    return ""


def max_depth() -> int:
    return int(getattr(settings, "API_MAX_JSON_DEPTH", 32))


def problems(value: Any, root: str = "") -> dict[str, list[str]]:
    """Every unstorable string, key or number in a parsed JSON value, by field path (e.g. `changes.note`).

    Iterative, so a deep value cannot exhaust Python's recursion limit while it is checked.
    """
    found: dict[str, list[str]] = {}
    for path, message in _walk(value, root, max_depth()):
        found.setdefault(path or "body", []).append(message)
        if len(found) >= MAX_ERRORS:
            break
    return found


def _walk(value: Any, root: str, limit: int) -> Iterator[tuple[str, str]]:
    stack: list[tuple[Any, str, int]] = [(value, root, 0)]
    while stack:
        node, path, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth >= limit:
                yield path, f"nested deeper than {limit} levels"
                continue
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(key, str) and (problem := text_problem(key)):
                    yield _join(path, key), f"this key {problem}"
                    continue
                stack.append((child, _join(path, key), depth + 1))
        elif isinstance(node, str):
            if problem := text_problem(node):
                yield path, problem
        elif isinstance(node, float) and not math.isfinite(node):
            yield path, "must be a finite number (not NaN or Infinity, and within a float's range)"


def _join(path: str, key: Any) -> str:
    """A readable, always-encodable path segment: odd keys are shown JSON-escaped in ASCII."""
    segment = str(key) if isinstance(key, int) or _SIMPLE_KEY.match(str(key)) else json.dumps(str(key)[:64])
    return f"{path}.{segment}" if path else segment


def _constant(name: str) -> float:
    """Let NaN/Infinity parse, so the check can name the field that holds them."""
    return float(name)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, plus the checks above; a failed check is a 400 naming the field."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read() if stream is not None else b""
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_constant)
        except RecursionError:
            raise exceptions.ValidationError({"body": [f"nested deeper than {max_depth()} levels"]}) from None
        except (UnicodeDecodeError, ValueError) as exc:
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
        _refuse(problems(data))
        return data


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        _refuse(problems(dict(data.lists())))
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parsed = super().parse(stream, media_type, parser_context)
        _refuse(problems(dict(parsed.data.lists())))
        return parsed


def _refuse(found: dict[str, list[str]]) -> None:
    if found:
        raise exceptions.ValidationError(found)


class RequestTextMiddleware:
    """400 for request text no database may carry (NUL), before any view runs: API query strings,
    and the query and form fields of every other page (the admin's own views read raw POST data;
    PostgreSQL refuses NUL, so it was a 500 there). API bodies are checked by the parsers above."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        errors = query_problems(request.GET)
        if not request.path.startswith("/api/") and request.content_type in FORM_TYPES:
            errors.update(query_problems(request.POST))
        if not errors:
            return self.get_response(request)
        detail = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items())
        if request.path.startswith("/api/"):
            return JsonResponse({"errors": errors, "detail": detail}, status=400)
        return HttpResponseBadRequest(f"Not saved: {detail}", content_type="text/plain; charset=utf-8")


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def query_problems(query) -> dict[str, list[str]]:
    """Each query parameter whose name or values hold text no filter may carry."""
    errors: dict[str, list[str]] = {}
    for name, values in query.lists():
        for text in (name, *values):
            if problem := text_problem(text):
                errors[_join("", name)] = [problem]
                break
    return errors
