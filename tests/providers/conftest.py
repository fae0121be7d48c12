"""Simulator fixtures: one real HTTP server per provider for the session,
reset before every test (runs, faults, request log).

``simulator_servers`` serves every simulator of the registry; the
``<short name>_sim`` fixtures (``github_sim``, ``cursor_sim``, ``devin_sim``)
and ``sim_for(provider_id)`` hand one out, reset.
"""

from __future__ import annotations

import time

import pytest

from connectors.simulators import SimulatorServer, simulator_classes


@pytest.fixture(scope="session")
def simulator_servers():
    servers = {pid: cls(port=0).start() for pid, cls in simulator_classes().items()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def sim_for(simulator_servers):
    """``sim_for(provider_id)``: that provider's simulator, reset."""

    def get(provider_id: str) -> SimulatorServer:
        server = simulator_servers[provider_id]
        server.reset()
        return server

    return get


@pytest.fixture
def github_sim(sim_for):
    return sim_for("github_actions")


@pytest.fixture
def cursor_sim(sim_for):
    return sim_for("cursor")


@pytest.fixture
def devin_sim(sim_for):
    return sim_for("devin")


class ShiftedClock:
    """A simulator's clock, moved forward on demand (output without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def skip(self, seconds: float) -> None:
        self.offset += seconds


def shift_clock(simulator, monkeypatch) -> ShiftedClock:
    """Give ``simulator`` a clock the test moves forward with ``skip``."""
    shifted = ShiftedClock()
    monkeypatch.setattr(simulator, "clock", shifted)
    return shifted


@pytest.fixture(autouse=True)
def contract(request, monkeypatch):
    """Every exchange of the adapter suites is checked against the providers'
    transcribed schemas (tests/contracts); a violation fails the test. A test
    that feeds the adapter an undocumented answer on purpose (an unknown
    status, say) is marked ``off_contract``."""
    from tests.contracts.recorder import ContractRecorder

    recorder = ContractRecorder().install(monkeypatch)
    yield recorder
    if request.node.get_closest_marker("off_contract") is None and recorder.violations:
        pytest.fail("provider contract violations:\n" + "\n".join(recorder.violations[:20]))
