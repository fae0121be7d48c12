"""End-to-end fixtures: the provider simulators of ``tests/providers`` (one
server per provider for the session, reset before each test)."""

from __future__ import annotations

# Imported fixtures are registered by pytest in this directory's tests.
from tests.providers.conftest import (  # noqa: F401
    cursor_sim,
    devin_sim,
    github_sim,
    sim_for,
    simulator_servers,
)
