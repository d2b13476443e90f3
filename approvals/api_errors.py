"""Error bodies integrations can rely on: `{"errors": {"field": ["message"]}}`, never a 500 for bad input."""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.urls import Resolver404, resolve
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages})
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc))
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        response.data = {"errors": detail}
    else:
        message = response.data.get("detail", "") if isinstance(response.data, dict) else str(response.data)
        response.data = {"errors": {"detail": [str(message)]}, "detail": str(message)}
    return response


def error_response(status_code: int, field: str, message: str) -> Response:
    return Response({"errors": {field: [message]}, "detail": message}, status=status_code)


class ApiBodyLimitMiddleware:
    """413 for API bodies over API_MAX_BODY_BYTES, before anything is parsed or stored."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith("/api/"):
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > settings.API_MAX_BODY_BYTES:
                message = f"the body is {length} bytes; the limit is {settings.API_MAX_BODY_BYTES}"
                return JsonResponse({"errors": {"body": [message]}, "detail": message}, status=413)
        return self.get_response(request)


class ApiErrorMiddleware:
    """Every answer under /api/ that is an error is JSON in the contract's shape, whoever made it.

    DRF's handler covers errors raised in its views; this covers the rest: Django's own 404 for a
    path no route matches (an HTML page, or the debug page under DEBUG), a POST without its trailing
    slash (CommonMiddleware's APPEND_SLASH raises under DEBUG and would redirect a POST's body away
    otherwise), and any exception nobody caught (a 500 with an id to quote, logged with the same id).
    It sits outside CommonMiddleware so the missing slash is answered before that redirect happens.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith("/api/"):
            return self.get_response(request)
        if not request.path.endswith("/") and _resolves(request.path + "/"):
            message = f"{request.path} needs its trailing slash: {request.path}/"
            return JsonResponse({"errors": {"path": [message]}, "detail": message}, status=404)
        response = self.get_response(request)
        if response.status_code >= 400 and not _is_json(response):
            return _json_error(request, response.status_code)
        return response

    def process_exception(self, request, exception):
        if request.path.startswith("/api/") and not isinstance(exception, Http404):
            return _json_error(request, 500, exception)
        return None


def _resolves(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True


def _is_json(response) -> bool:
    return response.get("Content-Type", "").split(";")[0].strip() in {"application/json", "application/problem+json"}


def _json_error(request, status: int, exception: BaseException | None = None) -> JsonResponse:
    if status >= 500:
        error_id = uuid.uuid4().hex[:12]
        logger.error("API error %s on %s %s", error_id, request.method, request.path,
                     exc_info=(type(exception), exception, exception.__traceback__) if exception else None)
        message = f"internal error; quote id {error_id} when you report it"
        return JsonResponse({"errors": {"server": [message]}, "detail": message, "id": error_id}, status=status)
    message = {404: f"no such resource: {request.path}", 405: f"method {request.method} not allowed"}.get(status)
    message = message or _phrase(status)
    return JsonResponse({"errors": {"detail": [message]}, "detail": message}, status=status)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"error {status}"
