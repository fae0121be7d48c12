"""Local runs are watched through their worker's heartbeat (spec §6)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from execution.models import RunEvent
from execution.reconciler import reconcile_run, reconcile_sweep
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db


def local_run(project, seconds_since_beat: float, status: str = "running"):
    return RunFactory(
        project=project,
        provider_id="local",
        status=status,
        worker_id="host:123",
        heartbeat_at=timezone.now() - timedelta(seconds=seconds_since_beat),
    )


def test_a_local_run_whose_worker_stopped_beating_fails_with_worker_lost(project):
    run = local_run(project, seconds_since_beat=31)

    report = reconcile_sweep()

    run.refresh_from_db()
    assert report.worker_lost == 1
    assert (run.status, run.status_reason) == ("failed", "worker_lost")
    assert run.ended_at is not None
    event = RunEvent.objects.get(run=run, event_type="status_changed")
    assert "worker host:123 stopped beating" in event.text


def test_a_canceling_local_run_with_a_dead_worker_also_fails(project):
    run = local_run(project, seconds_since_beat=120, status="canceling")

    reconcile_sweep()

    run.refresh_from_db()
    assert (run.status, run.status_reason) == ("failed", "worker_lost")


def test_a_local_run_with_a_recent_heartbeat_keeps_running(project):
    run = local_run(project, seconds_since_beat=5)

    assert reconcile_sweep().worker_lost == 0
    run.refresh_from_db()
    assert run.status == "running"


def test_the_grace_period_comes_from_settings(project, settings):
    settings.EXECUTION = {**settings.EXECUTION, "HEARTBEAT_GRACE_S": 2.0}
    run = local_run(project, seconds_since_beat=3)

    reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "failed"


def test_a_sweep_for_another_provider_leaves_local_runs_alone(project, fake):
    run = local_run(project, seconds_since_beat=300)

    reconcile_sweep(provider_id="fake")

    run.refresh_from_db()
    assert run.status == "running"


def test_manual_reconcile_of_a_local_run_is_the_heartbeat_check(project):
    lost = local_run(project, seconds_since_beat=300)
    alive = local_run(project, seconds_since_beat=1)

    assert reconcile_run(lost.pk, actor="alice").status == "failed"
    assert reconcile_run(alive.pk, actor="alice").status == "running"
