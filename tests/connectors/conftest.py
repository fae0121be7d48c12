"""Fixtures of the connector framework tests: the in-memory fake provider."""

from __future__ import annotations

import pytest

from tests.support.fake_adapter import FakeBackend, use_fake_provider


@pytest.fixture
def fake(monkeypatch) -> FakeBackend:
    """``FakeAdapter`` registered as provider ``fake`` for this test; its backend."""
    return use_fake_provider(monkeypatch)
