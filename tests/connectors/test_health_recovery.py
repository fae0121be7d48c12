"""Health and the circuit recover by themselves: a provider held back by a
rejected credential or by an outage gets a run again as a half-open probe, and
is used again within a minute of recovering, without anyone acting."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connectors import circuit, services
from connectors.errors import RateLimited
from connectors.models import HealthStatus, ProviderCircuit, ProviderConfig
from execution.dispatch import dispatch_run
from execution.models import Run
from tests.factories import RunFactory
from tests.support.fake_adapter import FakeAdapter

pytestmark = pytest.mark.django_db

API_KEY = "health-key-Gh7Jk2Lm9Np4"
RESET_S = 30.0


class Clock:
    """``timezone.now`` moved forward on demand (a simulated clock)."""

    def __init__(self, monkeypatch) -> None:
        self.offset = timedelta()
        real_now = timezone.now
        monkeypatch.setattr(timezone, "now", lambda: real_now() + self.offset)

    def skip(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def fake_ready(project, fake, settings):
    settings.EXECUTION = {**settings.EXECUTION, "CIRCUIT_RESET_S": RESET_S}
    services.update_config(project, "fake", actor="test", enabled=True)
    services.write_credentials(project, "fake", {"apiKey": API_KEY}, user=None)
    return fake


def new_run(project) -> Run:
    run = RunFactory(project=project, provider_id="fake")
    dispatch_run(run.pk)
    run.refresh_from_db()
    return run


def went_to_provider(run: Run) -> bool:
    return run.provider_id == "fake" and bool(run.provider_run_id)


def config(project) -> ProviderConfig:
    return ProviderConfig.objects.get(project=project, provider_id="fake")


def test_a_single_rejected_credential_does_not_pin_the_provider_to_failing(
    project, fake_ready, clock
):
    fake_ready.fail_next("auth")
    assert new_run(project).status_reason == "provider_auth_failed"
    assert config(project).health_status == HealthStatus.FAILING

    held_back = new_run(project)  # right after: the provider is held back
    clock.skip(RESET_S + 1)
    probe = new_run(project)  # the fault cleared meanwhile: the probe gets through

    assert held_back.fallback_from_provider_id == "fake" and held_back.provider_id == "local"
    assert went_to_provider(probe)
    healthy = config(project)
    assert healthy.health_status == HealthStatus.HEALTHY
    assert healthy.health_checked_at >= timezone.now() - timedelta(seconds=5)  # when last checked
    assert went_to_provider(new_run(project))


def test_only_one_run_probes_a_failing_provider_at_a_time(project, fake_ready, clock):
    fake_ready.fail_next("auth", times=2)
    new_run(project)
    clock.skip(RESET_S + 1)

    probe = new_run(project)  # refused again: failing for another period
    after = new_run(project)

    assert probe.status == "failed" and probe.status_reason == "provider_auth_failed"
    assert after.provider_id == "local"
    assert fake_ready.dispatch_calls == 2


def test_after_a_60s_outage_new_runs_go_to_the_provider_within_60s_of_recovery(
    project, fake_ready, clock
):
    # The outage starts with a rejected request (a 401 from a proxy in front
    # of the provider, say), then the provider answers 503 for a minute.
    fake_ready.fail_next("auth")
    fake_ready.fail_next("transient", operations=("dispatch", "recover_dispatch"), times=10**6)
    during: list[Run] = []
    for _ in range(12):  # one new run every 5 s for 60 s of outage
        during.append(new_run(project))
        clock.skip(5)
    assert not any(went_to_provider(r) for r in during)
    assert any(r.fallback_from_provider_id == "fake" for r in during)

    fake_ready._failures.clear()  # the provider is back; nobody touches anything
    waited = 0.0
    while waited <= 60:
        run = new_run(project)
        if went_to_provider(run):
            break
        clock.skip(5)
        waited += 5
    assert went_to_provider(run), "a recovered provider was not used again within 60 s"
    assert waited <= 60
    assert not ProviderCircuit.objects.filter(
        provider_id="fake", open_until__gt=timezone.now()
    ).exists()


def test_rate_limits_do_not_open_the_circuit_on_dispatch(project, fake_ready, monkeypatch):
    def rate_limited(self, spec):
        raise RateLimited("secondary rate limit", status_code=429, retry_after=30)

    monkeypatch.setattr(FakeAdapter, "dispatch", rate_limited)
    for _ in range(8):
        run = RunFactory(project=project, provider_id="fake")
        assert dispatch_run(run.pk) == "retry_scheduled"

    assert not circuit.is_open("fake", FakeAdapter.default_base_url)
    assert not ProviderCircuit.objects.filter(consecutive_failures__gt=0).exists()


def test_a_failed_dispatch_shows_the_run_stale_beside_its_error(project, fake_ready):
    fake_ready.fail_next("transient")
    run = RunFactory(project=project, provider_id="fake")

    dispatch_run(run.pk)

    run.refresh_from_db()
    assert run.last_sync_error
    assert run.sync_status == "stale"
