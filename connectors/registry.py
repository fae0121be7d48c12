"""Provider id → adapter class: the explicit table the admin, the API, routing
and the conformance tests read. Adding a provider is one line here (plus its
adapter module and a conformance test module)."""

from __future__ import annotations

from connectors.adapters.cursor import CursorAdapter
from connectors.adapters.devin import DevinAdapter
from connectors.adapters.github_actions import GitHubActionsAdapter
from connectors.adapters.local import LocalAdapter
from connectors.base import ProviderAdapter
from connectors.errors import UnknownProvider

LOCAL_PROVIDER_ID = "local"

REGISTRY: dict[str, type[ProviderAdapter]] = {
    "local": LocalAdapter,
    "github_actions": GitHubActionsAdapter,
    "cursor": CursorAdapter,
    "devin": DevinAdapter,
}


def adapter_class(provider_id: str) -> type[ProviderAdapter]:
    try:
        return REGISTRY[provider_id]
    except KeyError:
        raise UnknownProvider(
            f"Unknown provider {provider_id!r}.", {"providerId": ["Unknown provider."]}
        ) from None


def provider_ids() -> list[str]:
    return list(REGISTRY)
