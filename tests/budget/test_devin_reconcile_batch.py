"""The reconciler with Devin's batch polling (on its simulator): one listing
of the sessions for many due runs, and a session read of its own only for
the runs whose messages are due (ended, status changed, log interval)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connectors import services
from connectors.providers.devin import adapter as devin
from connectors.providers.devin.adapter import BASE_TAG
from connectors.providers.devin.simulator import DevinSimulator
from execution.models import Run, RunEvent
from execution.reconcile import cadence
from execution.reconciler import reconcile_sweep
from tests.contracts.recorder import ContractRecorder
from tests.factories import RunFactory

KEY = DevinSimulator.default_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def sim():
    with DevinSimulator() as simulator:
        yield simulator


@pytest.fixture
def configured(project, sim):
    services.update_config(
        project, "devin", actor="test", enabled=True, settings={"baseUrl": sim.url}
    )
    services.write_credentials(project, "devin", {"apiKey": KEY}, user=None)
    return project


@pytest.fixture(autouse=True)
def contract(monkeypatch):
    """The exchanges of these sweeps keep Devin's documented shapes too."""
    recorder = ContractRecorder().install(monkeypatch)
    yield recorder
    assert recorder.violations == []


def sessions(sim, count: int, state: str = "working") -> list[str]:
    return sim.seed(count, state, tags=[BASE_TAG])


def runs_for(project, ids, status="running", raw="working"):
    now = timezone.now()
    runs = [
        RunFactory(
            project=project,
            provider_id="devin",
            provider_run_id=session_id,
            status=status,
            provider_status_raw=raw,
            next_reconcile_at=now,
            logs_fetched_at=now,
            last_reconciled_at=now,
        )
        for session_id in ids
    ]
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(created_at=now - timedelta(minutes=10))
    return runs


def due_again(runs, *, logs_read_s_ago: float = 0.0) -> None:
    """The runs' next listing has come (the schedule forgets the one it set)."""
    cadence.listings.clear()
    now = timezone.now()
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(
        next_reconcile_at=now, logs_fetched_at=now - timedelta(seconds=logs_read_s_ago)
    )


def kinds(sim):
    return [entry["kind"] for entry in sim.request_log()]


def session_reads(sim):
    return sorted(e["path"] for e in sim.request_log() if e["kind"] == "get_session")


def test_one_listing_answers_for_every_due_session(configured, sim):
    ids = sessions(sim, 12)
    runs_for(configured, ids)

    report = reconcile_sweep()

    assert report.polled == 12
    assert kinds(sim) == ["list_sessions"]
    assert set(Run.objects.values_list("sync_status", flat=True)) == {"in_sync"}
    assert set(Run.objects.values_list("status", flat=True)) == {"running"}


def test_messages_are_read_only_for_the_sessions_whose_logs_are_due(configured, sim):
    ids = sessions(sim, 6)
    runs = runs_for(configured, ids)
    sim.set_state(ids[0], "finished")  # the end: its last messages
    sim.set_state(ids[1], "blocked")  # a status change: what it asks

    reconcile_sweep()

    assert kinds(sim).count("list_sessions") == 1
    assert session_reads(sim) == sorted(f"/v1/sessions/{i}" for i in ids[:2])
    ended, asking = Run.objects.get(pk=runs[0].pk), Run.objects.get(pk=runs[1].pk)
    assert (ended.status, ended.next_reconcile_at) == ("succeeded", None)
    assert asking.status == "waiting"
    lines = "".join(
        RunEvent.objects.filter(run=ended, event_type="output").values_list("text", flat=True)
    )
    assert "Pull request: " in lines
    assert ended.log_cursor["seen"] > 0 and "lastEventId" in ended.log_cursor
    assert RunEvent.objects.filter(run=asking, event_type="output").exists()
    assert not RunEvent.objects.filter(run__pk__in=[r.pk for r in runs[2:]], event_type="output")


def test_a_waiting_session_is_not_reread_on_every_listing(configured, sim, settings, monkeypatch):
    monkeypatch.setattr(devin, "LISTING_REUSE_S", 0.0)  # each sweep lists anew
    interval = settings.EXECUTION["RECONCILE_LOG_INTERVAL_S"]
    ids = sessions(sim, 3, "blocked")
    runs = runs_for(configured, ids, status="waiting", raw="blocked")

    reconcile_sweep()  # unchanged, messages read a moment ago
    due_again(runs, logs_read_s_ago=interval / 2)
    reconcile_sweep()  # still within the log interval
    unchanged = kinds(sim)
    due_again(runs, logs_read_s_ago=interval + 1)
    reconcile_sweep()  # the log interval is over

    assert unchanged == ["list_sessions", "list_sessions"]
    assert kinds(sim)[2:].count("list_sessions") == 1
    assert session_reads(sim) == sorted(f"/v1/sessions/{i}" for i in ids)
    assert set(Run.objects.values_list("status", flat=True)) == {"waiting"}


def test_a_session_the_listing_misses_is_read_alone_with_its_status(configured, sim):
    listed = sessions(sim, 2)
    (untagged,) = sim.seed(1, "finished", tags=["made-elsewhere"])
    runs = runs_for(configured, [*listed, untagged])

    reconcile_sweep()

    ended = Run.objects.get(pk=runs[2].pk)
    assert ended.status == "succeeded"
    assert kinds(sim).count("list_sessions") == 1
    # Left out of the listing's answer, it is read alone: status and last
    # messages from one read (logs_with_status).
    assert session_reads(sim) == [f"/v1/sessions/{untagged}"]
    assert RunEvent.objects.filter(run=ended, event_type="output").exists()
