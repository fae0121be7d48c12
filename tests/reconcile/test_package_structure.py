"""The reconciler package has one owner per concern and no import cycle, and
adapters never see the engine's own state."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import pytest

import execution.reconcile
from connectors import registry
from connectors.base import RunRef
from execution.models import Run

PACKAGE = "execution.reconcile"
PACKAGE_DIR = Path(execution.reconcile.__file__).parent


def _module_name(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE_DIR.glob("*.py"))}


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names an import statement brings in (``from a import b`` gives
    ``a.b`` and ``a``: ``b`` may be a submodule or a name)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        anchor = parts if is_package else parts[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Edges between the package's modules, from every import statement in
    them: top level, inside functions and under ``if TYPE_CHECKING:`` alike."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py"):
                if target in modules and target != name:
                    graph[name].add(target)
                elif target.startswith(PACKAGE + ".") and target.rsplit(".", 1)[0] in modules:
                    # ``from execution.reconcile.x import y``: y is a name in x.
                    owner = target.rsplit(".", 1)[0]
                    if owner != name:
                        graph[name].add(owner)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle_it_is_shown():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_imports_only_type_checkers_follow(tmp_path):
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from execution.reconcile.sweep import Sweep\n"
        "def f():\n"
        "    from . import apply\n"
    )
    found = {t for node in ast.walk(tree) for t in _imported(node, f"{PACKAGE}.pool", False)}
    assert f"{PACKAGE}.sweep" in found and f"{PACKAGE}.apply" in found


def test_the_reconcile_package_has_no_import_cycle_not_even_for_type_checkers():
    graph = import_graph()
    assert {f"{PACKAGE}.{m}" for m in ("types", "claims", "pool", "breaker", "poll")} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph) or [])}"


def test_types_import_nothing_back_and_no_module_imports_the_package_facade():
    graph = import_graph()
    assert graph[f"{PACKAGE}.types"] == set()
    assert not [name for name, edges in graph.items() if PACKAGE in edges]
    assert graph[PACKAGE] == set()  # importing one module loads no engine


# --- adapters never read engine state -----------------------------------------------------

# What the engine keeps about a run for itself (never the adapter's business).
ENGINE_FIELDS = (
    "log_cursor",
    "logs_fetched_at",
    "last_reconciled_at",
    "next_reconcile_at",
    "reconcile_attempts",
    "sync_failing_since",
    "lease_owner",
    "lease_expires_at",
)
# The keys the engine used to keep inside provider_state.
ENGINE_KEYS = ("logCursor", "logsFetchedAt")


def test_an_adapter_is_handed_nothing_of_the_engines_state():
    handed = {f.name for f in dataclasses.fields(RunRef)}
    assert handed == {
        "run_id",
        "provider_run_id",
        "dispatch_key",
        "provider_state",
        "created_at",
        "provider_status_raw",
    }
    assert set(ENGINE_FIELDS) <= {f.name for f in Run._meta.get_fields()}


@pytest.mark.parametrize("provider_id", sorted(registry.REGISTRY))
def test_no_adapter_reads_engine_state(provider_id):
    source = inspect.getsource(inspect.getmodule(registry.REGISTRY[provider_id]))
    read = [name for name in ENGINE_FIELDS + ENGINE_KEYS if name in source]
    assert read == [], f"{provider_id} adapter reads engine state: {read}"
