"""Provider trouble never ends a run: backoff, stale, error, recovery (spec §3, §6)."""

from __future__ import annotations

import itertools

import pytest
from django.utils import timezone

from connectors.errors import (
    AuthError,
    PermanentError,
    ProviderTimeout,
    RateLimited,
    TransientError,
)
from connectors.models import ProviderCircuit, ProviderConfig
from execution.models import Run
from execution.reconciler import reconcile_sweep
from tests.reconcile.conftest import make_due

pytestmark = pytest.mark.django_db


def down(fake, **kwargs):
    fake.failure = lambda: TransientError("GET /runs failed: HTTP 503", status_code=503, **kwargs)


def gap_s(run) -> float:
    return (run.next_reconcile_at - timezone.now()).total_seconds()


def test_a_transient_failure_keeps_the_run_and_its_sync_status_within_the_threshold(fake, make_run):
    fake.add("p-1", "working")
    run = make_run("p-1")
    down(fake)

    report = reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "running"
    assert run.sync_status == "in_sync"  # not stale yet: one failed poll, 60 s threshold
    assert run.last_sync_error == ""  # never an error shown beside in_sync
    assert run.reconcile_attempts == 1
    assert run.sync_failing_since is not None
    assert report.errors == {"transient": 1}


def test_two_failed_polls_in_a_row_make_a_run_stale_before_the_threshold(fake, make_run):
    fake.add("p-1", "working")
    run = make_run("p-1")
    down(fake)

    reconcile_sweep()
    make_due(run)
    report = reconcile_sweep()

    run.refresh_from_db()
    assert run.sync_status == "stale"  # 2 failures, long before the 60 s threshold
    assert run.last_sync_error == "GET /runs failed: HTTP 503"
    assert report.stale == 1


def test_a_sync_error_is_never_shown_next_to_in_sync(fake, make_run):
    fake.add("p-1", "working")
    run = make_run("p-1")
    down(fake)

    for _ in range(3):
        reconcile_sweep()
        run.refresh_from_db()
        assert not (run.last_sync_error and run.sync_status == "in_sync")
        make_due(run)
    fake.failure = None
    reconcile_sweep()

    run.refresh_from_db()
    assert (run.sync_status, run.last_sync_error) == ("in_sync", "")


def test_provider_down_turns_runs_stale_backs_off_and_never_ends_them(fake, make_run, settings):
    settings.EXECUTION = {
        **settings.EXECUTION,
        "STALE_AFTER_S": 0.0,
        "CIRCUIT_FAILURE_THRESHOLD": 99,
    }
    fake.add("p-1", "working", "done")
    run = make_run("p-1")
    down(fake)

    gaps = []
    for _ in range(6):
        reconcile_sweep()
        run.refresh_from_db()
        gaps.append(gap_s(run))
        make_due(run)

    assert run.status == "running"
    assert run.sync_status == "stale"
    assert run.reconcile_attempts == 6
    assert all(later >= earlier - 0.1 for earlier, later in itertools.pairwise(gaps))
    assert gaps[-1] > 4 * gaps[0]
    assert gaps[-1] <= 300


def test_backoff_is_capped(fake, make_run, settings):
    settings.EXECUTION = {**settings.EXECUTION, "RECONCILE_MAX_BACKOFF_S": 20.0}
    fake.add("p-1", "working")
    run = make_run("p-1", reconcile_attempts=30)
    down(fake)

    reconcile_sweep()

    run.refresh_from_db()
    assert 9.9 <= gap_s(run) <= 20.0


def test_provider_back_returns_runs_to_in_sync_and_their_true_final_state(fake, make_run, settings):
    settings.EXECUTION = {**settings.EXECUTION, "STALE_AFTER_S": 0.0}
    fake.add("p-1", "done")
    run = make_run("p-1")
    down(fake)
    reconcile_sweep()
    run.refresh_from_db()
    assert run.sync_status == "stale"

    fake.failure = None
    make_due(run)
    reconcile_sweep()

    run.refresh_from_db()
    assert (run.status, run.sync_status) == ("succeeded", "in_sync")
    assert run.reconcile_attempts == 0
    assert run.sync_failing_since is None
    assert run.last_sync_error == ""


def test_retry_after_is_honoured_in_the_next_poll_time(fake, make_run):
    fake.add("p-1", "working")
    run = make_run("p-1")
    fake.failure = lambda: RateLimited("rate limited", status_code=429, retry_after=120.0)

    reconcile_sweep()

    run.refresh_from_db()
    assert 119 <= gap_s(run) <= 120.5
    assert run.status == "running"


def test_a_timeout_counts_as_transient(fake, make_run):
    fake.add("p-1", "working")
    run = make_run("p-1")
    fake.failure = lambda: ProviderTimeout("GET /runs timed out")

    report = reconcile_sweep()

    run.refresh_from_db()
    assert report.errors == {"timeout": 1}
    assert run.reconcile_attempts == 1
    assert run.status == "running"


def test_a_rejected_credential_marks_the_run_error_and_the_config_failing(fake, make_run, project):
    config = ProviderConfig.objects.create(project=project, provider_id="fake", enabled=True)
    fake.add("p-1", "working")
    run = make_run("p-1")
    fake.failure = lambda: AuthError("HTTP 401 bad credentials", status_code=401)

    reconcile_sweep()

    run.refresh_from_db()
    config.refresh_from_db()
    assert (run.status, run.sync_status) == ("running", "error")
    assert run.last_sync_error == "HTTP 401 bad credentials"
    assert 55 < gap_s(run) <= 60
    assert config.health_status == "failing"
    assert config.health_message == "HTTP 401 bad credentials"


def test_a_run_the_provider_does_not_know_is_error_not_terminal(fake, make_run):
    run = make_run("missing")

    report = reconcile_sweep()

    run.refresh_from_db()
    assert (run.status, run.sync_status) == ("running", "error")
    assert "not found" in run.last_sync_error
    assert report.errors == {"not_found": 1}


def test_a_permanent_error_is_error_not_terminal(fake, make_run):
    fake.add("p-1", "working")
    run = make_run("p-1")
    fake.failure = lambda: PermanentError("HTTP 422 unprocessable", status_code=422)

    reconcile_sweep()

    run.refresh_from_db()
    assert (run.status, run.sync_status) == ("running", "error")


def test_an_adapter_bug_is_contained_to_its_run(fake, other, make_run):
    fake.add("p-1", "working")
    other.add("o-1", "done")
    broken = make_run("p-1")
    fine = make_run("o-1", provider_id="other")

    def bug():
        raise KeyError("status")

    fake.failure = bug

    reconcile_sweep()

    broken.refresh_from_db()
    fine.refresh_from_db()
    assert (broken.status, broken.sync_status) == ("running", "error")
    assert "KeyError" in broken.last_sync_error
    assert fine.status == "succeeded"


def test_provider_errors_are_scrubbed_of_the_projects_credentials(fake, make_run, project):
    from connectors.models import ProviderCredential

    config = ProviderConfig.objects.create(project=project, provider_id="fake", enabled=True)
    credential = ProviderCredential(config=config)
    credential.values = {"apiKey": "sk-live-abcdef123456"}
    credential.save()
    fake.add("p-1", "working")
    run = make_run("p-1")
    fake.failure = lambda: AuthError("key sk-live-abcdef123456 rejected", status_code=401)

    reconcile_sweep()

    run.refresh_from_db()
    config.refresh_from_db()
    assert "sk-live-abcdef123456" not in run.last_sync_error
    assert "[REDACTED]" in run.last_sync_error
    assert "sk-live-abcdef123456" not in config.health_message


def test_an_open_circuit_skips_polling_and_counts_as_transient(fake, make_run, settings):
    settings.EXECUTION = {**settings.EXECUTION, "STALE_AFTER_S": 0.0}
    ProviderCircuit.objects.create(
        provider_id="fake",
        base_url="https://fake.invalid",
        consecutive_failures=5,
        open_until=timezone.now() + timezone.timedelta(seconds=30),
    )
    fake.add("p-1", "done")
    run = make_run("p-1")

    report = reconcile_sweep()

    run.refresh_from_db()
    assert fake.polls() == []
    assert report.errors == {"circuit_open": 1}
    assert (run.status, run.sync_status) == ("running", "stale")
    assert gap_s(run) >= 29  # not before the circuit may close


def test_failures_in_one_sweep_open_the_breaker_for_the_rest_of_it(fake, make_run, settings):
    settings.EXECUTION = {
        **settings.EXECUTION,
        "CIRCUIT_FAILURE_THRESHOLD": 3,
        "PROVIDER_CONCURRENCY": 1,
    }
    for n in range(10):
        fake.add(f"p-{n}", "working")
        make_run(f"p-{n}")
    down(fake)

    report = reconcile_sweep()

    assert len(fake.polls()) == 3
    assert report.errors == {"transient": 3, "circuit_open": 7}
    assert Run.objects.filter(status="running", reconcile_attempts=1).count() == 10
    circuit = ProviderCircuit.objects.get(provider_id="fake")
    assert circuit.open_until is not None  # shared with every other process now


def test_a_half_open_circuit_sends_one_probe_before_the_rest(fake, make_run, settings):
    settings.EXECUTION = {**settings.EXECUTION, "PROVIDER_CONCURRENCY": 4}
    ProviderCircuit.objects.create(
        provider_id="fake",
        base_url="https://fake.invalid",
        consecutive_failures=5,
        open_until=timezone.now() - timezone.timedelta(seconds=1),
    )
    for n in range(6):
        fake.add(f"p-{n}", "working")
        make_run(f"p-{n}")
    down(fake)

    report = reconcile_sweep()

    assert len(fake.polls()) == 1  # the probe failed: nobody else is sent
    assert report.errors == {"transient": 1, "circuit_open": 5}


def test_a_successful_probe_closes_the_circuit(fake, make_run):
    circuit = ProviderCircuit.objects.create(
        provider_id="fake",
        base_url="https://fake.invalid",
        consecutive_failures=5,
        open_until=timezone.now() - timezone.timedelta(seconds=1),
    )
    for n in range(6):
        fake.add(f"p-{n}", "working")
        make_run(f"p-{n}")

    report = reconcile_sweep()

    assert report.polled == 6
    assert report.errors == {}
    circuit.refresh_from_db()
    assert circuit.consecutive_failures == 0
