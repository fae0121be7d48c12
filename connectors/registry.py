"""Provider id → adapter class: the explicit table the admin, the API, routing
and the conformance tests read. It is built from
``connectors.providers.PROVIDER_IDS``: adding a provider is one folder
(``connectors/providers/<id>/adapter.py`` exporting ``ADAPTER``), one line
there and one conformance test (see docs/providers.md)."""

from __future__ import annotations

from importlib import import_module

from connectors.base import ProviderAdapter
from connectors.errors import UnknownProvider
from connectors.providers import PROVIDER_IDS

LOCAL_PROVIDER_ID = "local"


def _load(provider_id: str) -> type[ProviderAdapter]:
    adapter = import_module(f"connectors.providers.{provider_id}.adapter").ADAPTER
    if not (isinstance(adapter, type) and issubclass(adapter, ProviderAdapter)):
        raise TypeError(f"connectors.providers.{provider_id}.adapter.ADAPTER is not an adapter")
    if adapter.provider_id != provider_id:
        raise TypeError(f"{adapter.__name__}.provider_id is not {provider_id!r}")
    return adapter


REGISTRY: dict[str, type[ProviderAdapter]] = {pid: _load(pid) for pid in PROVIDER_IDS}


def adapter_class(provider_id: str) -> type[ProviderAdapter]:
    try:
        return REGISTRY[provider_id]
    except KeyError:
        raise UnknownProvider(
            f"Unknown provider {provider_id!r}.", {"providerId": ["Unknown provider."]}
        ) from None


def provider_ids() -> list[str]:
    return list(REGISTRY)
