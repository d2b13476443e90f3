"""Error bodies integrations can rely on: `{"errors": {"field": ["message"]}}`, never a 500 for bad input."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError as DjangoValidationError
from django.http import JsonResponse
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


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
