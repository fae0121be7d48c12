"""Reading and writing provider configuration and credentials, and building
ready-to-use adapters from them. Credential values leave this module only
inside a ``Secrets`` object (masked repr) or as masked previews."""

from __future__ import annotations

from typing import Any

from connectors.base import ProviderAdapter, Secrets
from connectors.models import ProviderConfig, ProviderCredential
from connectors.redaction import Redactor
from connectors.registry import adapter_class

PREVIEW_CHARS = 4


def get_config(project_id: int, provider_id: str) -> ProviderConfig | None:
    return (
        ProviderConfig.objects.filter(project_id=project_id, provider_id=provider_id)
        .select_related("credential")
        .first()
    )


def credential_values(config: ProviderConfig | None) -> dict[str, str]:
    if config is None:
        return {}
    try:
        return config.credential.values
    except ProviderCredential.DoesNotExist:
        return {}


def build_adapter(provider_id: str, config: ProviderConfig | None = None) -> ProviderAdapter:
    """An adapter instance with the config's settings and decrypted secrets."""
    cls = adapter_class(provider_id)
    settings: dict[str, Any] = dict(config.settings) if config else {}
    return cls(settings=settings, secrets=Secrets(credential_values(config)))


def project_redactor(project_id: int) -> Redactor:
    """Scrubs every credential value of the project (all its providers)."""
    values: list[str] = []
    for credential in ProviderCredential.objects.filter(config__project_id=project_id):
        values.extend(v for v in credential.values.values() if isinstance(v, str))
    return Redactor(values)


def mask(value: str) -> str:
    """ "set" plus at most the last four characters, never more than a quarter."""
    if not value:
        return ""
    visible = min(PREVIEW_CHARS, len(value) // 4)
    return "••••" + (value[-visible:] if visible else "")


def masked_credentials(provider_id: str, config: ProviderConfig | None) -> dict[str, Any]:
    """What the API and admin show of a credential: set/not set, masked preview, when."""
    cls = adapter_class(provider_id)
    values = credential_values(config)
    credential = getattr(config, "credential", None) if config else None
    return {
        "configured": all(values.get(f.name) for f in cls.secret_fields if f.required),
        "fields": [
            {
                "name": spec.name,
                "label": spec.label,
                "set": bool(values.get(spec.name)),
                "preview": mask(values.get(spec.name, "")),
            }
            for spec in cls.secret_fields
        ],
        "updatedAt": credential.updated_at if credential else None,
    }
