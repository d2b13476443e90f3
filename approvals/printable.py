"""Reading paths that never crash on stored text.

The API's edge refuses lone surrogates (approvals.api_input), but rows written before that,
or by another writer, may still hold one. A str with a lone surrogate cannot be encoded as
UTF-8, so the last step of every response (and of the audit export) would raise. These
helpers keep such text readable: JSON escapes it faithfully (`\\ud800`), HTML shows U+FFFD.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rest_framework import renderers
from rest_framework.response import Response

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def printable(text: str) -> str:
    """The text with every lone surrogate replaced by U+FFFD, so it can be encoded as UTF-8."""
    return _SURROGATE.sub(REPLACEMENT, text)


def json_text(value: Any, **kwargs: Any) -> str:
    """JSON of the value, readable UTF-8 when possible; with lone surrogates, ASCII escapes (same value)."""
    text = json.dumps(value, ensure_ascii=False, **kwargs)
    return json.dumps(value, ensure_ascii=True, **kwargs) if _SURROGATE.search(text) else text


class JSONRenderer(renderers.JSONRenderer):
    """DRF's JSON renderer, falling back to ASCII escapes when the data holds unencodable text."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            escaped = renderers.JSONRenderer()
            escaped.ensure_ascii = True
            return escaped.render(data, accepted_media_type, renderer_context)


class _PrintableTemplate:
    """Wraps a loaded template: what it renders is made encodable before the response encodes it."""

    def __init__(self, template):
        self.template = template

    def render(self, context=None, request=None) -> str:
        return printable(self.template.render(context, request))


class PrintableTemplateMiddleware:
    """Admin (and any template) pages render stored text with lone surrogates as U+FFFD instead of a 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_template_response(self, request, response):
        if response.template_name is not None and not isinstance(response, Response):
            response.template_name = _PrintableTemplate(response.resolve_template(response.template_name))
        return response
