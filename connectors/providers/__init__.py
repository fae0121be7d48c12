"""Providers, one folder each.

``connectors/providers/<id>/`` holds everything about one provider:

- ``adapter.py``: its ``ProviderAdapter`` subclass, exported as ``ADAPTER``;
- ``simulator.py`` (external providers): a loopback HTTP server standing in
  for the provider in tests, benchmarks and the demo, exported as
  ``SIMULATOR``. It declares its default port, demo token and demo settings.

``PROVIDER_IDS`` is the one line to add: ``connectors.registry`` reads the
adapters from it, ``connectors.simulators`` the simulators. This module imports
nothing, so the simulators (standard library only) can read it too.
"""

from __future__ import annotations

PROVIDER_IDS: tuple[str, ...] = ("local", "github_actions", "cursor", "devin")
