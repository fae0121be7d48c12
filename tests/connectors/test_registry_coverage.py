"""Every registered provider runs the shared conformance suite: adding a
registry line without a ``class TestXConformance(AdapterConformance)`` with
``adapter_class = XAdapter`` somewhere under ``tests/`` fails here."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from connectors import registry
from connectors.base import ProviderAdapter
from tests.support.conformance import AdapterConformance

TESTS_DIR = Path(__file__).resolve().parents[1]


def import_conformance_modules() -> list[str]:
    """Import every test module under tests/ that mentions the suite; returns
    the modules that skipped themselves at import."""
    skipped = []
    for path in sorted(TESTS_DIR.rglob("test_*.py")):
        if "AdapterConformance" not in path.read_text(encoding="utf-8"):
            continue
        module = ".".join(path.relative_to(TESTS_DIR.parent).with_suffix("").parts)
        try:
            importlib.import_module(module)
        except pytest.skip.Exception:
            skipped.append(module)
    return skipped


def conformance_subclasses() -> list[type[AdapterConformance]]:
    found, pending = [], list(AdapterConformance.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__name__.startswith("Test") and getattr(cls, "adapter_class", None):
            found.append(cls)
    return found


def providers_without_conformance(
    table: dict[str, type[ProviderAdapter]], suites: list[type[AdapterConformance]]
) -> list[str]:
    covered = {suite.adapter_class for suite in suites}
    return [pid for pid, adapter in table.items() if adapter not in covered]


def test_every_registered_provider_has_a_conformance_subclass():
    skipped = import_conformance_modules()

    missing = providers_without_conformance(registry.REGISTRY, conformance_subclasses())

    assert not missing, (
        f"no conformance test for provider(s) {missing}: add a test module with "
        "`class Test…Conformance(AdapterConformance): adapter_class = …`"
        + (f" (modules skipped at import: {skipped})" if skipped else "")
    )


def test_a_registry_entry_without_a_subclass_is_reported(monkeypatch):
    class UncoveredAdapter(ProviderAdapter):
        provider_id = "uncovered"

    monkeypatch.setitem(registry.REGISTRY, "uncovered", UncoveredAdapter)
    import_conformance_modules()

    missing = providers_without_conformance(registry.REGISTRY, conformance_subclasses())

    assert missing == ["uncovered"]


def test_local_is_covered_by_its_conformance_subclass():
    import_conformance_modules()

    names = {
        suite.__name__
        for suite in conformance_subclasses()
        if suite.adapter_class is registry.REGISTRY["local"]
    }

    assert "TestLocalConformance" in names
