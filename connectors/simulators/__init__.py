"""Provider simulators: real HTTP servers on loopback standing in for the
external platforms (GitHub Actions, Cursor Cloud Agents v1, Devin v1).

Used by the tests, the benchmarks and the local demo; pure standard library
(no Django), so ``python -m connectors.simulators`` starts instantly. See
``connectors.simulators.base`` for the shared control surface (``/_sim/``).
"""

from __future__ import annotations

from connectors.simulators.base import HOLD, Faults, SimRun, SimulatorServer, Step
from connectors.simulators.cursor import CursorSimulator
from connectors.simulators.devin import DevinSimulator
from connectors.simulators.github import GitHubActionsSimulator

SIMULATORS: dict[str, type[SimulatorServer]] = {
    "github_actions": GitHubActionsSimulator,
    "cursor": CursorSimulator,
    "devin": DevinSimulator,
}
"""Simulator class per provider id (the ids of the adapter registry)."""

DEFAULT_PORTS: dict[str, int] = {"github_actions": 8701, "cursor": 8702, "devin": 8703}

__all__ = [
    "DEFAULT_PORTS",
    "HOLD",
    "SIMULATORS",
    "CursorSimulator",
    "DevinSimulator",
    "Faults",
    "GitHubActionsSimulator",
    "SimRun",
    "SimulatorServer",
    "Step",
]
