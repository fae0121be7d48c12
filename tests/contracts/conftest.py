"""Contract-test fixtures: the provider simulators of ``tests/providers``."""

from __future__ import annotations

# Imported fixtures are registered by pytest in this directory's tests.
from tests.providers.conftest import (  # noqa: F401
    cursor_sim,
    devin_sim,
    github_sim,
    sim_for,
    simulator_servers,
)
