"""One error format for the whole API (spec §5).

Every error body is ``{"error": {"code": "...", "message": "...", "fields": {...}}}``:
``code`` is a stable machine code, ``fields`` (400 only) maps camelCase field
names to a flat list of messages. A nested field is named by its path with dots
(``settings.baseUrl``, ``reasonCodes.0``), so ``fields`` always has the one
shape the schema declares (``ccdash.api.schema.FieldErrorsField``).

Errors raised outside DRF views (unknown paths, oversized bodies, server
errors) get the same body from ``ccdash.api.middleware``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from connectors.errors import ConfigurationError


class ApiError(exceptions.APIException):
    """Raise with an explicit machine code, e.g. ``ApiError(409, "invalid_state", "…")``."""

    def __init__(self, status_code: int, code: str, message: str, fields: dict | None = None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.error_code = code
        self.message = message
        self.fields = fields or {}


class Conflict(ApiError):
    def __init__(self, message: str, code: str = "invalid_state"):
        super().__init__(status.HTTP_409_CONFLICT, code, message)


DEFAULT_CODES = {
    400: "invalid",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "throttled",
    500: "server_error",
}


def flatten_field_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """``{"a": {"b": ["m"]}, "c": [{"d": ["n"]}]}`` → ``{"a.b": ["m"], "c.0.d": ["n"]}``.

    A bare list of messages at the top is keyed ``nonField``."""
    flat: dict[str, list[str]] = {}

    def add(path: str, messages: list[str]) -> None:
        flat.setdefault(path or "nonField", []).extend(messages)

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, (list, tuple)):
            if all(not isinstance(item, (dict, list, tuple)) for item in node):
                add(path, [str(item) for item in node])
            else:
                for index, item in enumerate(node):
                    if item:  # many=True lists hold {} for the valid items
                        walk(item, f"{path}.{index}" if path else str(index))
        else:
            add(path, [str(node)])

    walk(detail, prefix)
    return flat


def error_body(code: str, message: str, fields: dict | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = flatten_field_errors(fields)
    return {"error": error}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApiError):
        return Response(error_body(exc.error_code, exc.message, exc.fields), status=exc.status_code)
    if isinstance(exc, ConfigurationError):
        return Response(
            error_body("invalid_config", exc.message, exc.field_errors),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = DEFAULT_CODES.get(response.status_code, "error")
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body("invalid", "Invalid input.", exc.detail)
    else:
        detail = getattr(exc, "detail", str(exc))
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else None
        if isinstance(codes, str) and response.status_code not in (401, 403, 404):
            code = codes
        response.data = error_body(code, str(detail))
    return response
