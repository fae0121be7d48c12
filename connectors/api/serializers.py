"""Provider API bodies and answers (camelCase, as the whole API).

Request serializers validate the envelope only; settings and credentials are
validated by the provider's adapter (``connectors.services``). Answer
serializers document the shapes for the OpenAPI schema; the answers
themselves are built by ``provider_view`` so that no serializer ever sees a
credential value.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from connectors.base import ConfigField, ProviderAdapter
from connectors.configs import masked_credentials
from connectors.models import ProviderConfig
from connectors.registry import LOCAL_PROVIDER_ID
from connectors.services import health_view
from connectors.webhooks import webhook_url
from execution.sandbox_config import current_sandbox

# --- requests ---------------------------------------------------------------------


class ProviderConfigBodySerializer(serializers.Serializer):
    """``PUT providers/{id}/config``. Omitted fields keep their stored value."""

    projectId = serializers.IntegerField()
    enabled = serializers.BooleanField(required=False)
    isDefault = serializers.BooleanField(required=False)
    allowFallbackToLocal = serializers.BooleanField(required=False)
    rolloutPercent = serializers.IntegerField(required=False, min_value=0, max_value=100)
    settings = serializers.DictField(
        required=False,
        help_text="Provider settings, validated by the adapter (see settingsFields).",
    )
    credentials = serializers.DictField(
        required=False,
        help_text=(
            "Write-only credentials to store with this change (secretField → value). "
            "Changing baseUrl's scheme, host or port clears the stored credentials "
            "unless new ones come here."
        ),
    )


class ProviderCredentialsBodySerializer(serializers.Serializer):
    """``POST providers/{id}/credentials``: a present key replaces, "" clears."""

    projectId = serializers.IntegerField()
    credentials = serializers.DictField(
        help_text="secretField → value; an empty string clears the field. Write-only."
    )


class ProjectRefSerializer(serializers.Serializer):
    projectId = serializers.IntegerField()


# --- answers (schema) -------------------------------------------------------------------


class CapabilitiesSerializer(serializers.Serializer):
    supportsStreaming = serializers.BooleanField()
    supportsCancel = serializers.BooleanField()
    supportsArtifacts = serializers.BooleanField()
    supportsResume = serializers.BooleanField()
    supportsFollowUp = serializers.BooleanField(
        help_text="Runs take messages while waiting (runs/{id}/messages) and "
        "follow-ups once finished (runs/{id}/follow-up)."
    )


@extend_schema_field({"description": "Default value (any JSON type, or null)."})
class AnyValueField(serializers.JSONField):
    pass


class ConfigFieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    kind = serializers.ChoiceField(choices=["string", "url", "integer", "boolean", "object"])
    required = serializers.BooleanField()
    default = AnyValueField(allow_null=True)
    helpText = serializers.CharField(allow_blank=True)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["unknown", "healthy", "failing"])
    checkedAt = serializers.DateTimeField(allow_null=True)
    message = serializers.CharField(allow_blank=True)


class MaskedFieldSerializer(serializers.Serializer):
    name = serializers.CharField()
    label = serializers.CharField()
    set = serializers.BooleanField()
    preview = serializers.CharField(
        allow_blank=True, help_text="'••••' plus at most the last four characters."
    )


class MaskedCredentialsSerializer(serializers.Serializer):
    configured = serializers.BooleanField()
    fields = MaskedFieldSerializer(many=True)
    updatedAt = serializers.DateTimeField(allow_null=True)


class ProviderSerializer(serializers.Serializer):
    id = serializers.CharField()
    label = serializers.CharField()
    kind = serializers.ChoiceField(choices=["local", "external"])
    inputKind = serializers.ChoiceField(
        choices=["command", "prompt"],
        help_text="What runs on this provider take: a command line or a prompt for a coding agent.",
    )
    capabilities = CapabilitiesSerializer()
    configured = serializers.BooleanField(
        help_text="Settings valid and, for an external provider, required credentials set."
    )
    enabled = serializers.BooleanField()
    isDefault = serializers.BooleanField()
    allowFallbackToLocal = serializers.BooleanField()
    rolloutPercent = serializers.IntegerField()
    settings = serializers.DictField()
    settingsFields = ConfigFieldSerializer(many=True)
    secretFields = ConfigFieldSerializer(many=True)
    health = HealthSerializer()
    credentials = MaskedCredentialsSerializer()
    webhookUrl = serializers.CharField(
        allow_null=True,
        help_text="Providers that sign webhooks (GitHub Actions): the absolute URL to paste "
        "into the repository's webhook settings, with the content type application/json and "
        "the webhookSecret credential as its secret; null for the others or before the "
        "provider is configured.",
    )
    lastWebhookAt = serializers.DateTimeField(
        allow_null=True, help_text="When the last verified webhook delivery arrived."
    )
    sandbox = serializers.ChoiceField(
        choices=["bwrap", "none", "unavailable"],
        allow_null=True,
        help_text=(
            "Local provider only (null for the others): how local runs are isolated. "
            "`bwrap`: a bubblewrap sandbox; `none`: unsandboxed, chosen by the operator "
            "(EXECUTION_SANDBOX=none); `unavailable`: bubblewrap is required but missing, "
            "so local runs fail with `sandbox_unavailable`."
        ),
    )


# --- building answers ---------------------------------------------------------------------


def field_view(spec: ConfigField) -> dict[str, Any]:
    return {
        "name": spec.name,
        "label": spec.label,
        "kind": spec.kind,
        "required": spec.required,
        "default": spec.default,
        "helpText": spec.help_text,
    }


def settings_are_valid(cls: type[ProviderAdapter], config: ProviderConfig | None) -> bool:
    try:
        cls.validate_config(dict(config.settings) if config else {})
    except Exception:  # ConfigurationError, or an adapter bug: either way not usable
        return False
    return True


def provider_view(
    cls: type[ProviderAdapter],
    config: ProviderConfig | None,
    default_provider_id: str,
    request: HttpRequest | None = None,
) -> dict[str, Any]:
    """One entry of ``GET providers``: declared metadata, stored config, health
    and masked credential status. Never a credential value."""
    is_local = cls.provider_id == LOCAL_PROVIDER_ID
    credentials = masked_credentials(cls.provider_id, config)
    configured = settings_are_valid(cls, config) and (
        is_local or not any(f.required for f in cls.secret_fields) or credentials["configured"]
    )
    return {
        "id": cls.provider_id,
        "label": cls.label,
        "kind": cls.kind,
        "inputKind": cls.input_kind,
        "capabilities": cls.capabilities().as_api(),
        "configured": configured,
        "enabled": True if is_local else bool(config and config.enabled),
        "isDefault": cls.provider_id == default_provider_id,
        "allowFallbackToLocal": config.allow_fallback_to_local if config else True,
        "rolloutPercent": config.rollout_percent if config else 100,
        "settings": dict(config.settings) if config else {},
        "settingsFields": [field_view(f) for f in cls.config_fields],
        "secretFields": [field_view(f) for f in cls.secret_fields],
        "health": health_view(config),
        "credentials": credentials,
        "webhookUrl": webhook_url(request, config),
        "lastWebhookAt": config.last_webhook_at if config else None,
        "sandbox": current_sandbox().mode if is_local else None,
    }
