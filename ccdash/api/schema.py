"""OpenAPI pieces shared by the API views: the error envelope of
``ccdash.api.errors`` as a schema component, one response per status code."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import OpenApiResponse, extend_schema_field
from rest_framework import serializers


class TokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """``Authorization: Token <token>`` (``ccdash.api.auth``) in the schema."""

    target_class = "ccdash.api.auth.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix="Token"
        )


@extend_schema_field(
    {
        "type": "object",
        "additionalProperties": {
            "oneOf": [
                {"type": "array", "items": {"type": "string"}},
                {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                },
            ]
        },
        "description": "camelCase field name (or nonField) → messages; for an object "
        "field (settings, credentials) subField → messages. 400 only.",
    }
)
class FieldErrorsField(serializers.DictField):
    pass


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable machine code, e.g. invalid_state.")
    message = serializers.CharField()
    fields = FieldErrorsField(required=False)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


_DESCRIPTIONS = {
    400: "Invalid input (see error.fields).",
    401: "Not authenticated.",
    403: "Your role in the project does not allow this (permission_denied).",
    404: "Not found, or not in one of your projects.",
    409: "The run's state does not allow this action.",
    502: "The provider failed the call (provider_error).",
    413: "The request body is too large (payload_too_large).",
    429: "Too many requests (throttled); see the Retry-After header.",
}

ERROR_RESPONSES: dict[int, OpenApiResponse] = {
    code: OpenApiResponse(ErrorSerializer, description=text) for code, text in _DESCRIPTIONS.items()
}
