"""A provider is one folder: the registry, the simulators and the runtime
packages follow from ``connectors.providers.PROVIDER_IDS``."""

from __future__ import annotations

import ast
from pathlib import Path

from connectors import registry
from connectors.providers import PROVIDER_IDS
from connectors.simulators import simulator_classes
from connectors.simulators.__main__ import parse_args
from execution.demo import ensure_demo

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ("ccdash", "connectors", "execution")


def test_the_registry_is_built_from_the_provider_folders():
    assert list(registry.REGISTRY) == list(PROVIDER_IDS)
    for provider_id, adapter in registry.REGISTRY.items():
        assert adapter.__module__ == f"connectors.providers.{provider_id}.adapter"


def test_every_external_provider_has_a_simulator_declaring_its_demo():
    external = [pid for pid, a in registry.REGISTRY.items() if a.kind == "external"]

    assert sorted(simulator_classes()) == sorted(external)
    ports = [cls.default_port for cls in simulator_classes().values()]
    assert len(set(ports)) == len(ports) and all(ports)
    for provider_id, simulator in simulator_classes().items():
        adapter = registry.REGISTRY[provider_id]
        assert simulator.token_field in {f.name for f in adapter.secret_fields}
        adapter.validate_config({**simulator.demo_settings, "baseUrl": "http://127.0.0.1:1"})


def test_the_runner_has_a_port_flag_per_simulator_defaulting_to_its_declared_port():
    args = parse_args(["--cursor-port", "0"])

    for provider_id, simulator in simulator_classes().items():
        expected = 0 if provider_id == "cursor" else simulator.default_port
        assert getattr(args, f"port_{provider_id}") == expected


def test_the_demo_configures_every_simulated_provider(db, settings, tmp_path):
    settings.VAR_DIR = tmp_path

    info = ensure_demo()

    assert sorted(info.providers) == sorted(simulator_classes())


def test_no_runtime_module_imports_pytest():
    offenders = []
    for package in RUNTIME_PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(name.split(".")[0] == "pytest" for name in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
