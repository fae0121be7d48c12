"""The local executor passes the shared adapter conformance suite."""

from __future__ import annotations

from connectors.providers.local.adapter import LocalAdapter
from tests.support.conformance import AdapterConformance


class TestLocalConformance(AdapterConformance):
    adapter_class = LocalAdapter
