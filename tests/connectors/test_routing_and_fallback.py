"""Routing: policy first, then the provider if it is enabled, rolled
out, healthy and its circuit closed; else local when the project allows it,
else a visible failure. The adapter is never called for a run it must not get."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connectors import circuit, services
from connectors.models import HealthStatus, ProviderCircuit, ProviderConfig
from execution.dispatch import dispatch_run
from execution.models import Run, RunEvent
from execution.services import RunRequest, create_run
from tests.factories import RunFactory
from tests.support.fake_adapter import FakeAdapter

pytestmark = pytest.mark.django_db

API_KEY = "route-key-Pq4Rs8Tu2Vw6"


@pytest.fixture
def fake_ready(project, fake):
    """The fake provider enabled with a key: runs to it are sent to it."""
    services.update_config(project, "fake", actor="test", enabled=True)
    services.write_credentials(project, "fake", {"apiKey": API_KEY}, user=None)
    return fake


def make_unavailable(project, why: str) -> None:
    config = ProviderConfig.objects.get(project=project, provider_id="fake")
    if why == "provider_disabled":
        config.enabled = False
    elif why == "provider_unhealthy":
        config.health_status = HealthStatus.FAILING
        config.health_checked_at = timezone.now()
        config.health_message = "credential revoked"
    elif why == "provider_not_rolled_out":
        config.rollout_percent = 0
    elif why == "provider_circuit_open":
        ProviderCircuit.objects.create(
            provider_id="fake",
            base_url=FakeAdapter.default_base_url,
            consecutive_failures=5,
            open_until=timezone.now() + timedelta(minutes=5),
        )
    config.save()


def forbid_fallback(project) -> None:
    ProviderConfig.objects.filter(project=project, provider_id="fake").update(
        allow_fallback_to_local=False
    )


def events(run: Run, event_type: str) -> list[RunEvent]:
    return list(RunEvent.objects.filter(run=run, event_type=event_type))


UNAVAILABLE = [
    "provider_disabled",
    "provider_unhealthy",
    "provider_not_rolled_out",
    "provider_circuit_open",
]


def test_available_provider_gets_the_run(project, fake_ready):
    run = RunFactory(project=project, provider_id="fake")

    assert dispatch_run(run.pk) == "dispatched"

    run.refresh_from_db()
    assert fake_ready.create_calls == 1
    assert run.provider_id == "fake"
    assert run.provider_run_id == "fake-1"
    assert run.provider_url.endswith("/runs/fake-1")
    assert run.fallback_from_provider_id == ""
    assert run.next_reconcile_at is not None
    assert fake_ready.runs["fake-1"].dispatch_key == run.dispatch_key
    assert events(run, "dispatched")[0].payload["providerRunId"] == "fake-1"


@pytest.mark.parametrize("why", UNAVAILABLE)
def test_unavailable_provider_falls_back_to_local_when_allowed(why, project, fake_ready):
    make_unavailable(project, why)
    run = RunFactory(project=project, provider_id="fake", command="echo from-local")

    dispatch_run(run.pk)

    run.refresh_from_db()
    assert run.provider_id == "local"
    assert run.fallback_from_provider_id == "fake"
    (fallback,) = events(run, "fallback_to_local")
    assert fallback.payload == {"fromProviderId": "fake", "reason": why}
    assert fake_ready.dispatch_calls == 0
    assert fake_ready.recover_calls == 0


def test_fallback_run_really_runs_locally(project, fake_ready):
    make_unavailable(project, "provider_disabled")
    run = RunFactory(project=project, provider_id="fake", command="echo from-local")

    dispatch_run(run.pk)  # tests run django-q2 tasks inline: the local worker runs now

    run.refresh_from_db()
    assert run.status == "succeeded"
    assert run.exit_code == 0
    output = "".join(e.text for e in RunEvent.objects.filter(run=run, stream="stdout"))
    assert "from-local" in output


def test_provider_without_any_config_falls_back(project, fake):
    run = RunFactory(project=project, provider_id="fake")

    dispatch_run(run.pk)

    run.refresh_from_db()
    assert run.provider_id == "local"
    assert events(run, "fallback_to_local")[0].payload["reason"] == "provider_disabled"
    assert fake.dispatch_calls == 0


@pytest.mark.parametrize("why", UNAVAILABLE)
def test_unavailable_provider_fails_the_run_when_fallback_is_not_allowed(why, project, fake_ready):
    make_unavailable(project, why)
    forbid_fallback(project)
    run = RunFactory(project=project, provider_id="fake")

    assert dispatch_run(run.pk) == "failed"

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.status_reason == why
    assert run.provider_id == "fake"
    assert run.fallback_from_provider_id == ""
    (changed,) = events(run, "status_changed")
    assert changed.payload["reason"] == why
    assert "Fake provider" in changed.text
    assert fake_ready.dispatch_calls == 0
    assert fake_ready.recover_calls == 0


def test_project_that_forbids_fallback_overrides_the_config(project, fake_ready):
    project.allow_fallback_to_local = False
    project.save()
    make_unavailable(project, "provider_disabled")
    run = RunFactory(project=project, provider_id="fake")

    dispatch_run(run.pk)

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.status_reason == "provider_disabled"


def test_circuit_opened_by_repeated_failures_routes_the_next_run_locally(project, fake_ready):
    for _ in range(5):
        circuit.record_failure("fake", FakeAdapter.default_base_url, "HTTP 503")
    run = RunFactory(project=project, provider_id="fake")

    dispatch_run(run.pk)

    run.refresh_from_db()
    assert run.fallback_from_provider_id == "fake"
    assert fake_ready.dispatch_calls == 0


# --- policy: the same gate as local -------------------------------------------------------------


def test_denied_command_to_an_external_provider_is_blocked_at_creation(
    project, operator, fake_ready, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = create_run(project, operator, RunRequest(command="sudo ls", provider_id="fake"))

    run.refresh_from_db()
    assert run.status == "blocked"
    assert run.status_reason == "policy_denied"
    assert "privilege_escalation" in run.reason_codes
    assert fake_ready.dispatch_calls == 0


def test_denied_command_is_blocked_again_right_before_dispatch(project, fake_ready):
    # The policy is evaluated again at dispatch time, whatever the run says.
    run = RunFactory(project=project, provider_id="fake", command="sudo ls")

    assert dispatch_run(run.pk) == "blocked"

    run.refresh_from_db()
    assert run.status == "blocked"
    assert run.status_reason == "policy_denied"
    assert fake_ready.dispatch_calls == 0
    assert fake_ready.recover_calls == 0


# --- provider errors during dispatch -------------------------------------------------------------


def test_transient_error_schedules_a_retry_and_counts_a_circuit_failure(project, fake_ready):
    fake_ready.fail_next("transient")
    run = RunFactory(project=project, provider_id="fake")

    assert dispatch_run(run.pk) == "retry_scheduled"

    run.refresh_from_db()
    assert run.status == "queued"
    assert run.provider_run_id == ""
    assert run.next_reconcile_at > timezone.now()
    assert "unavailable" in run.last_sync_error
    assert len(events(run, "dispatch_retry_scheduled")) == 1
    (breaker,) = ProviderCircuit.objects.filter(provider_id="fake")
    assert breaker.consecutive_failures == 1


def test_repeated_transient_errors_fail_the_run_and_open_the_circuit(project, fake_ready):
    fake_ready.fail_next("transient", times=10)
    run = RunFactory(project=project, provider_id="fake")

    outcomes = [dispatch_run(run.pk) for _ in range(5)]

    assert outcomes == ["retry_scheduled"] * 4 + ["failed"]
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.status_reason == "dispatch_failed"
    assert circuit.is_open("fake", FakeAdapter.default_base_url)
    assert fake_ready.create_calls == 0


def test_auth_error_fails_the_run_and_marks_the_provider_failing_without_the_secret(
    project, fake_ready
):
    fake_ready.fail_next("auth", echo_secret=True)
    run = RunFactory(project=project, provider_id="fake")

    assert dispatch_run(run.pk) == "failed"

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.status_reason == "provider_auth_failed"
    config = ProviderConfig.objects.get(project=project, provider_id="fake")
    assert config.health_status == HealthStatus.FAILING
    assert "rejected the API key" in config.health_message
    assert API_KEY not in config.health_message
    for event in RunEvent.objects.filter(run=run):
        assert API_KEY not in event.text
        assert API_KEY not in str(event.payload)


def test_configuration_error_fails_the_run_and_marks_the_provider_failing(project, fake_ready):
    fake_ready.fail_next("config")
    run = RunFactory(project=project, provider_id="fake")

    assert dispatch_run(run.pk) == "failed"

    run.refresh_from_db()
    assert run.status_reason == "dispatch_failed"
    config = ProviderConfig.objects.get(project=project, provider_id="fake")
    assert config.health_status == HealthStatus.FAILING


def test_a_run_for_a_provider_removed_from_the_registry_fails_visibly(project, monkeypatch):
    run = RunFactory(project=project, provider_id="retired_provider")

    assert dispatch_run(run.pk) == "failed"

    run.refresh_from_db()
    assert run.status == "failed"
    assert run.status_reason == "unknown_provider"
