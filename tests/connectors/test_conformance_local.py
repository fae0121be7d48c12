"""The local executor passes the shared adapter conformance suite."""

from __future__ import annotations

from connectors.adapters.local import LocalAdapter
from connectors.testing.conformance import AdapterConformance


class TestLocalConformance(AdapterConformance):
    adapter_class = LocalAdapter
