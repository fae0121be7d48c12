"""One error format for the whole API (spec §5).

Every error body is ``{"error": {"code": "...", "message": "...", "fields": {...}}}``:
``code`` is a stable machine code, ``fields`` (400 only) maps camelCase field
names to a list of messages, or, for an object field such as ``settings``, to
``{subField: [messages]}`` (``normalize_field_errors``): exactly the two shapes
the schema declares (``ccdash.api.schema.FieldErrorsField``).

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


def _flatten(node: Any, path: str, into: dict[str, list[str]]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flatten(value, f"{path}.{key}" if path else str(key), into)
    elif isinstance(node, (list, tuple)):
        if all(not isinstance(item, (dict, list, tuple)) for item in node):
            into.setdefault(path or "nonField", []).extend(str(item) for item in node)
        else:
            for index, item in enumerate(node):
                if item:  # many=True lists hold {} for the valid items
                    _flatten(item, f"{path}.{index}" if path else str(index), into)
    else:
        into.setdefault(path or "nonField", []).append(str(node))


def normalize_field_errors(detail: Any) -> dict[str, list[str] | dict[str, list[str]]]:
    """The two shapes ``fields`` takes, and nothing else (the schema's
    ``FieldErrorsField``): ``field → [messages]``, or for an object field
    (``settings``, ``credentials``) ``field → {subField → [messages]}``.
    Anything deeper is named by a dotted path inside the object
    (``items → {"1.baseUrl": [...]}``); a bare list is keyed ``nonField``."""
    if not isinstance(detail, dict):
        return {"nonField": _flat_messages(detail)}
    normalized: dict[str, list[str] | dict[str, list[str]]] = {}
    for key, value in detail.items():
        if isinstance(value, dict) or (
            isinstance(value, (list, tuple)) and any(isinstance(v, dict) for v in value)
        ):
            nested: dict[str, list[str]] = {}
            _flatten(value, "", nested)
            normalized[str(key)] = nested
        else:
            normalized[str(key)] = _flat_messages(value)
    return normalized


def _flat_messages(value: Any) -> list[str]:
    flat: dict[str, list[str]] = {}
    _flatten(value, "", flat)
    return [message for messages in flat.values() for message in messages]


def error_body(code: str, message: str, fields: dict | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if fields:
        error["fields"] = normalize_field_errors(fields)
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
