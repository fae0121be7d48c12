"""Fixtures for reconciler tests: scripted providers registered for the test,
external runs that are due, and EXECUTION overrides."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connectors import registry
from tests.factories import RunFactory
from tests.reconcile.fakes import ScriptedBackend, adapter_for


@pytest.fixture(autouse=True)
def _reconcile_settings(settings):
    """Deterministic defaults: no stale grace unless a test sets one."""
    settings.EXECUTION = {
        **settings.EXECUTION,
        "RECONCILE_INTERVAL_S": 5.0,
        "RECONCILE_ERROR_INTERVAL_S": 60.0,
        "RECONCILE_MAX_BACKOFF_S": 300.0,
        "STALE_AFTER_S": 60.0,
        "RECONCILE_LOG_INTERVAL_S": 10.0,
        "CIRCUIT_FAILURE_THRESHOLD": 5,
        "RECONCILE_CONCURRENCY": 8,
        "PROVIDER_CONCURRENCY": 4,
    }
    return settings


def _register(monkeypatch, provider_id: str) -> ScriptedBackend:
    backend = ScriptedBackend()
    monkeypatch.setitem(registry.REGISTRY, provider_id, adapter_for(provider_id, backend))
    return backend


@pytest.fixture
def fake(monkeypatch) -> ScriptedBackend:
    """Provider ``fake``."""
    return _register(monkeypatch, "fake")


@pytest.fixture
def other(monkeypatch) -> ScriptedBackend:
    """Provider ``other``: a second, independent provider."""
    return _register(monkeypatch, "other")


@pytest.fixture
def make_run(project):
    """An active external run, due now (``due_in`` seconds from now otherwise)."""

    def make(
        provider_run_id: str = "p-1",
        *,
        provider_id: str = "fake",
        status: str = "running",
        due_in: float = -1.0,
        **fields,
    ):
        return RunFactory(
            project=project,
            provider_id=provider_id,
            provider_run_id=provider_run_id,
            status=status,
            next_reconcile_at=timezone.now() + timedelta(seconds=due_in),
            **fields,
        )

    return make


def make_due(*runs) -> None:
    """Pretend the time for their next poll has come."""
    from execution.models import Run

    Run.objects.filter(pk__in=[r.pk for r in runs]).update(
        next_reconcile_at=timezone.now() - timedelta(seconds=1)
    )
