"""Each external provider through the whole pipeline, against its simulator.

The project is configured through the provider API, runs are launched and
cancelled through the run API (the dispatch and cancel tasks run inline:
django-q2 is synchronous in tests), and only reconcile sweeps move them after
that — no test calls an adapter directly.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone

from connectors.simulators import simulator_classes
from execution.models import Run, RunEvent
from execution.reconcile import cadence
from execution.reconciler import reconcile_sweep
from tests.conftest import client_for

RUNS = "/api/execution/runs"
PROVIDERS = "/api/execution/providers"
TERMINAL = {"succeeded", "failed", "canceled", "blocked"}
# A marker the simulators understand: the run stays running until advanced.
HELD = "echo e2e [sim:hold]"


@dataclass(frozen=True)
class Provider:
    id: str


CASES = [Provider(pid) for pid in simulator_classes()]


@pytest.fixture(autouse=True)
def _fast_reconcile(settings):
    """Thresholds a test can wait for: stale after 0.5 s, and an opened
    circuit half-opens after 0.2 s."""
    settings.EXECUTION = {**settings.EXECUTION, "STALE_AFTER_S": 0.5, "CIRCUIT_RESET_S": 0.2}


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def provider(request) -> Provider:
    return request.param


@pytest.fixture
def sim(provider, request):
    return request.getfixturevalue("sim_for")(provider.id)


@pytest.fixture
def operator_api(operator):
    return client_for(operator)


@pytest.fixture
def configured(project, admin_member, provider, sim):
    """The project uses the provider, pointed at its simulator, set up through the API."""
    admin = client_for(admin_member)
    config = admin.put(
        f"{PROVIDERS}/{provider.id}/config",
        {
            "projectId": project.pk,
            "enabled": True,
            "settings": {**sim.demo_settings, "baseUrl": sim.url},
        },
        format="json",
    )
    assert config.status_code == 200, config.content
    credentials = admin.post(
        f"{PROVIDERS}/{provider.id}/credentials",
        {"projectId": project.pk, "credentials": sim.demo_credentials()},
        format="json",
    )
    assert credentials.status_code in (200, 201), credentials.content
    return project


# --- helpers -------------------------------------------------------------------------------


def launch(api, project, provider: Provider, command: str, capture) -> dict:
    """POST a run; the dispatch task runs when the request's transaction commits."""
    with capture(execute=True):
        response = api.post(
            RUNS,
            {"projectId": project.pk, "command": command, "providerId": provider.id},
            format="json",
        )
    assert response.status_code == 201, response.content
    return api.get(f"{RUNS}/{response.json()['id']}").json()


def sweep(run_id: int) -> Run:
    """Move on to the run's next poll (its slot's next listing, for a
    batch-polled run) and sweep once; the run as stored afterwards."""
    cadence.listings.clear()
    Run.objects.filter(pk=run_id).update(next_reconcile_at=timezone.now() - timedelta(seconds=1))
    reconcile_sweep()
    return Run.objects.get(pk=run_id)


def sweep_until(run_id: int, done: Callable[[Run], bool], timeout: float = 15.0) -> Run:
    deadline = time.monotonic() + timeout
    while True:
        run = sweep(run_id)
        if done(run):
            return run
        assert time.monotonic() < deadline, (
            f"run {run_id} still {run.status}/{run.sync_status}: {run.last_sync_error}"
        )
        time.sleep(0.1)


def statuses(run_id: int) -> list[str]:
    return list(
        RunEvent.objects.filter(run_id=run_id, event_type="status_changed")
        .order_by("sequence_no")
        .values_list("payload__to", flat=True)
    )


def output(run_id: int) -> list[tuple[str, str]]:
    rows = RunEvent.objects.filter(run_id=run_id, event_type="output").order_by("sequence_no")
    return [(e.text, json.dumps(e.payload, sort_keys=True)) for e in rows]


def all_events(api, run_id: int) -> list[dict]:
    events, after = [], 0
    while True:
        page = api.get(f"{RUNS}/{run_id}/events", {"afterSequence": after, "limit": 500}).json()
        events += page["items"]
        if not page["items"]:
            return events
        after = page["nextSequence"]


def provider_entry(api, project, provider_id: str) -> dict:
    listed = api.get(PROVIDERS, {"projectId": project.pk})
    assert listed.status_code == 200
    return next(p for p in listed.json() if p["id"] == provider_id)


def running(run: Run) -> bool:
    return run.status == "running"


# --- acceptance 1: dispatch, states, logs, cancel ---------------------------------------------


def test_a_launched_run_is_stored_with_its_provider_ids_and_reconciled_to_succeeded(
    configured, provider, sim, operator_api, django_capture_on_commit_callbacks
):
    run = launch(operator_api, configured, provider, HELD, django_capture_on_commit_callbacks)

    assert run["providerId"] == provider.id
    assert run["providerRunId"]
    assert run["providerUrl"].startswith("http")
    assert run["status"] in ("queued", "running")

    sweep_until(run["id"], running)
    sim.advance(run["providerRunId"])  # the provider finishes the run
    final = sweep_until(run["id"], lambda r: r.status in TERMINAL)

    assert (final.status, final.sync_status) == ("succeeded", "in_sync")
    assert final.provider_status_raw
    assert statuses(run["id"])[-2:] == ["running", "succeeded"]
    shown = operator_api.get(f"{RUNS}/{run['id']}").json()
    assert (shown["status"], shown["syncStatus"]) == ("succeeded", "in_sync")
    assert shown["lastReconciledAt"] and shown["nextReconcileAt"] is None


def test_output_arrives_with_no_line_stored_twice_across_many_sweeps(
    configured, provider, sim, operator_api, settings, django_capture_on_commit_callbacks
):
    settings.EXECUTION = {**settings.EXECUTION, "RECONCILE_LOG_INTERVAL_S": 0.0}  # every sweep
    if "stream_max_seconds" in sim.options:
        # Cursor's stream of a working run stays open until the server's limit
        # (2 s by default): a shorter one keeps eleven sweeps quick.
        sim.configure(stream_max_seconds=0.3)
    run = launch(operator_api, configured, provider, HELD, django_capture_on_commit_callbacks)
    sweep_until(run["id"], running)

    for _ in range(8):  # every sweep fetches logs while the provider keeps writing
        sweep(run["id"])
        time.sleep(0.3)
    sim.advance(run["providerRunId"])
    sweep_until(run["id"], lambda r: r.status in TERMINAL)
    for _ in range(3):  # and a few more after the end
        sweep(run["id"])

    lines = output(run["id"])
    assert len(lines) >= 3
    assert len(lines) == len(set(lines)), "a line was stored twice"


def test_cancel_through_the_api_ends_canceled(
    configured, provider, sim, operator_api, django_capture_on_commit_callbacks
):
    run = launch(operator_api, configured, provider, HELD, django_capture_on_commit_callbacks)
    sweep_until(run["id"], running)

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_api.post(f"{RUNS}/{run['id']}/cancel")

    assert response.status_code == 200, response.content
    assert response.json()["status"] in ("canceling", "canceled")
    # Cursor and Devin confirm at once; GitHub cancels asynchronously and the
    # next sweep sees it.
    final = sweep_until(run["id"], lambda r: r.status in TERMINAL)
    assert final.status == "canceled"
    assert sim.state_of(run["providerRunId"]) in {"cancelled", "CANCELLED", "expired"}


# --- acceptance 5: a revoked token ----------------------------------------------------------


def test_a_revoked_token_turns_the_run_to_sync_error_and_the_provider_failing_without_the_token(
    configured, provider, sim, operator_api, admin_member, django_capture_on_commit_callbacks
):
    run = launch(operator_api, configured, provider, HELD, django_capture_on_commit_callbacks)
    sweep_until(run["id"], running)

    sim.revoke_tokens()
    stored = sweep(run["id"])

    assert (stored.status, stored.sync_status) == ("running", "error")
    assert "401" in stored.last_sync_error
    shown = operator_api.get(f"{RUNS}/{run['id']}").json()
    assert shown["syncStatus"] == "error"
    assert shown["lastSyncError"] == stored.last_sync_error
    health = provider_entry(client_for(admin_member), configured, provider.id)["health"]
    assert health["status"] == "failing"
    assert health["message"]
    token = sim.default_token
    answers = [
        json.dumps(shown),
        json.dumps(all_events(operator_api, run["id"])),
        json.dumps(provider_entry(client_for(admin_member), configured, provider.id)),
        json.dumps(operator_api.get(RUNS, {"projectId": configured.pk}).json()),
    ]
    assert not [answer for answer in answers if token in answer]
    assert not RunEvent.objects.filter(text__contains=token).exists()


# --- a provider outage ----------------------------------------------------


def test_a_provider_outage_makes_the_run_stale_never_terminal_and_recovery_finishes_it(
    configured, provider, sim, operator_api, django_capture_on_commit_callbacks
):
    run = launch(operator_api, configured, provider, HELD, django_capture_on_commit_callbacks)
    sweep_until(run["id"], running)
    sim.fail_next(10_000, status=503)

    first = sweep(run["id"])
    assert (first.status, first.sync_status) == ("running", "in_sync")  # not stale yet
    time.sleep(0.6)  # past STALE_AFTER_S
    seen = [sweep(run["id"]) for _ in range(6)]

    assert {r.status for r in seen} == {"running"}
    assert seen[-1].sync_status == "stale"
    assert seen[-1].reconcile_attempts >= 2
    assert seen[-1].last_sync_error
    shown = operator_api.get(f"{RUNS}/{run['id']}").json()
    assert (shown["status"], shown["syncStatus"]) == ("running", "stale")

    sim.clear_faults()
    back = sweep_until(run["id"], lambda r: r.sync_status == "in_sync")
    assert back.status == "running"
    sim.advance(run["providerRunId"])
    final = sweep_until(run["id"], lambda r: r.status in TERMINAL)
    assert (final.status, final.sync_status, final.last_sync_error) == ("succeeded", "in_sync", "")


DEVIN = next(case for case in CASES if case.id == "devin")


@pytest.mark.parametrize("provider", [DEVIN], ids=["devin"], indirect=True)
def test_each_sweep_reads_a_devin_session_once_even_when_logs_are_due(
    configured, provider, sim, operator_api, settings, django_capture_on_commit_callbacks
):
    # Devin carries its output in the session: one GET is the poll and the log fetch.
    settings.EXECUTION = {**settings.EXECUTION, "RECONCILE_LOG_INTERVAL_S": 0.0}  # always due
    run = launch(operator_api, configured, provider, HELD, django_capture_on_commit_callbacks)
    sweep_until(run["id"], running)
    sweep(run["id"])  # output caught up
    session_path = f"/v1/sessions/{run['providerRunId']}"
    before = [r for r in sim.request_log() if r["path"] == session_path]

    sweep(run["id"])

    after = [r for r in sim.request_log() if r["path"] == session_path]
    assert len(after) - len(before) == 1
