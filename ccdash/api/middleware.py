"""Every answer under ``/api/`` that is an error is the API's JSON error format.

DRF views already answer errors through ``ccdash.api.errors``; this covers what
happens outside them: Django's HTML 404 for an unknown path, its HTML 400 for a
body over ``DATA_UPLOAD_MAX_MEMORY_SIZE``, its HTML 500 page. A body declared
larger than that limit is refused up front with 413, before anything reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from ccdash.api.errors import DEFAULT_CODES, error_body

API_PREFIX = "/api/"
# Headers of the original answer a client still needs.
_KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


def json_error(status: int, code: str | None = None, message: str | None = None) -> JsonResponse:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return JsonResponse(
        error_body(code or DEFAULT_CODES.get(status, "error"), message or f"{phrase}."),
        status=status,
    )


class ApiJsonErrorsMiddleware:
    """Contract: for a path under ``/api/``, a response with status >= 400
    whose body is not JSON is replaced by ``{"error": {"code", "message"}}``
    with the same status (and its ``Allow``/``WWW-Authenticate``/``Retry-After``
    headers); a ``Content-Length`` above ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is
    answered 413 ``payload_too_large`` without calling the view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return json_error(400, "invalid", "Invalid Content-Length header.")
        if limit is not None and length > limit:
            return json_error(
                413,
                "payload_too_large",
                f"The request body is larger than {limit} bytes.",
            )
        response = self.get_response(request)
        if response.status_code < 400 or _is_json(response):
            return response
        replacement = json_error(response.status_code)
        for header in _KEPT_HEADERS:
            if header in response:
                replacement[header] = response[header]
        return replacement


def _is_json(response: HttpResponse) -> bool:
    content_type = response.get("Content-Type", "")
    return content_type.startswith("application/json") or content_type.endswith("+json")
