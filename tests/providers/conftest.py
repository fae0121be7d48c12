"""Simulator fixtures: one real HTTP server per provider for the session,
reset before every test (runs, faults, request log)."""

from __future__ import annotations

import time

import pytest

from connectors.simulators import CursorSimulator, DevinSimulator, GitHubActionsSimulator


def _session_sim(cls):
    server = cls(port=0).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _github_server():
    yield from _session_sim(GitHubActionsSimulator)


@pytest.fixture(scope="session")
def _cursor_server():
    yield from _session_sim(CursorSimulator)


@pytest.fixture(scope="session")
def _devin_server():
    yield from _session_sim(DevinSimulator)


@pytest.fixture
def github_sim(_github_server):
    _github_server.reset()
    return _github_server


@pytest.fixture
def cursor_sim(_cursor_server):
    _cursor_server.reset()
    return _cursor_server


@pytest.fixture
def devin_sim(_devin_server):
    _devin_server.reset()
    return _devin_server


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
