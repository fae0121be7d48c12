"""Provider fidelity, end to end against every simulator: a create answer lost
after the provider created the run gives exactly one external creation; a
cancel that arrives while the dispatch is in flight ends the run canceled and
the external run cancelled; logs keep their lines."""

from __future__ import annotations

import time

import pytest
import requests

from connectors import services as connector_services
from connectors.base import ProviderAdapter
from connectors.registry import REGISTRY
from connectors.simulators import simulator_classes
from execution import services
from execution.dispatch import dispatch_run
from execution.models import Run, RunEvent
from execution.reconciler import Reconciler
from tests.factories import RunFactory
from tests.providers.conftest import shift_clock

pytestmark = pytest.mark.django_db

PROVIDERS = list(simulator_classes())
# How each simulator shows a run it cancelled.
CANCELLED = {"github_actions": "cancelled", "cursor": "CANCELLED", "devin": "expired"}


@pytest.fixture(params=PROVIDERS)
def provider_id(request) -> str:
    return request.param


@pytest.fixture
def sim(provider_id, sim_for):
    return sim_for(provider_id)


@pytest.fixture
def configured(project, provider_id, sim):
    connector_services.update_config(
        project,
        provider_id,
        actor="test",
        enabled=True,
        settings={**sim.demo_settings, "baseUrl": sim.url},
    )
    connector_services.write_credentials(project, provider_id, sim.demo_credentials(), user=None)
    return project


def sweep(run: Run) -> None:
    """One forced sweep of ``run``, its dispatch retries inline (the test's
    transaction is the only database connection)."""
    with Reconciler(batch_size=1, concurrency=1, inline=True) as reconciler:
        reconciler.sweep(run_ids=[run.pk], force=True)


def settle(run: Run, until: set[str], seconds: float = 15.0) -> Run:
    """Sweep (forced, so no waiting for next_reconcile_at) until the run's
    status is one of ``until``."""
    deadline = time.monotonic() + seconds
    run.refresh_from_db()
    while run.status not in until and time.monotonic() < deadline:
        sweep(run)
        run.refresh_from_db()
        if run.status not in until:
            time.sleep(0.1)
    return run


def test_a_lost_create_answer_gives_one_creation_and_the_right_provider_run_id(
    configured, provider_id, sim
):
    run = RunFactory(project=configured, provider_id=provider_id, command="echo work [sim:hold]")
    sim.drop_answer_next(1)

    assert dispatch_run(run.pk) == "retry_scheduled"
    assert dispatch_run(run.pk) == "recovered"

    run.refresh_from_db()
    assert sim.stats()["creations"] == 1
    assert sim.stats()["runs"] == 1
    assert sim.run_snapshot(run.provider_run_id)["id"] == run.provider_run_id
    assert run.provider_url


def test_a_cancel_during_dispatch_ends_canceled_and_cancels_the_external_run(
    configured, provider_id, sim, operator, monkeypatch
):
    run = RunFactory(project=configured, provider_id=provider_id, command="echo work [sim:hold]")
    adapter_class = REGISTRY[provider_id]
    original = adapter_class.dispatch

    def cancel_arrives_meanwhile(self: ProviderAdapter, spec):
        services.cancel(Run.objects.get(pk=spec.run_id), operator)
        return original(self, spec)

    monkeypatch.setattr(adapter_class, "dispatch", cancel_arrives_meanwhile)

    dispatch_run(run.pk)
    run = settle(run, {"canceled", "failed", "succeeded"})

    assert run.status == "canceled"
    assert run.provider_run_id
    assert sim.state_of(run.provider_run_id) == CANCELLED[provider_id]
    assert sim.stats()["creations"] == 1


def test_a_cancel_during_a_dispatch_whose_answer_is_lost_cancels_the_run_found_later(
    configured, provider_id, sim, operator, monkeypatch
):
    run = RunFactory(project=configured, provider_id=provider_id, command="echo work [sim:hold]")
    adapter_class = REGISTRY[provider_id]
    original = adapter_class.dispatch

    def cancel_then_lose_the_answer(self: ProviderAdapter, spec):
        services.cancel(Run.objects.get(pk=spec.run_id), operator)
        sim.drop_answer_next(1)
        return original(self, spec)

    monkeypatch.setattr(adapter_class, "dispatch", cancel_then_lose_the_answer)

    assert dispatch_run(run.pk) == "retry_scheduled"
    run.refresh_from_db()
    assert (run.status, run.provider_run_id) == ("canceling", "")
    run = settle(run, {"canceled", "failed", "succeeded"})

    assert run.status == "canceled"
    assert sim.stats()["creations"] == 1
    assert sim.state_of(run.provider_run_id) == CANCELLED[provider_id]


def test_a_cancel_before_any_dispatch_attempt_ends_canceled_at_once(
    configured, provider_id, sim, operator
):
    run = RunFactory(project=configured, provider_id=provider_id, command="echo work")

    services.cancel(run, operator)

    assert dispatch_run(run.pk) == "skipped"
    run.refresh_from_db()
    assert run.status == "canceled"
    assert sim.stats()["creations"] == 0


def source_text(provider_id: str, sim, provider_run_id: str) -> str:
    """The run's whole output as the provider serves it."""
    headers = {"Authorization": f"Bearer {sim.default_token}"}
    if provider_id == "github_actions":
        job_id = int(provider_run_id) * 1000 + 1
        url = f"{sim.url}/repos/ccdash/demo/actions/jobs/{job_id}/logs"
        return requests.get(url, headers=headers, timeout=5).text
    session = requests.get(f"{sim.url}/v1/sessions/{provider_run_id}", headers=headers, timeout=5)
    body = session.json()
    text = "".join(f"{message['message']}\n" for message in body["messages"])
    return text + f"Pull request: {body['pull_request']['url']}\n"


@pytest.mark.parametrize("provider_id", ["github_actions", "devin"])
def test_no_log_line_is_lost_doubled_or_merged(configured, provider_id, sim, monkeypatch):
    clock = shift_clock(sim, monkeypatch)  # 20 s of simulated work, polled every 1.5 s
    run = RunFactory(project=configured, provider_id=provider_id, command="echo one [sim:slow]")
    dispatch_run(run.pk)
    for _ in range(30):
        clock.skip(1.5)
        sweep(run)
        run.refresh_from_db()
        if run.status == "succeeded":
            break
    sweep(run)  # nothing new after the end

    texts = list(
        RunEvent.objects.filter(run=run, event_type="output")
        .order_by("sequence_no")
        .values_list("text", flat=True)
    )
    expected = source_text(provider_id, sim, run.provider_run_id).splitlines()
    stored = "".join(texts).splitlines()

    assert run.status == "succeeded"
    assert all(text.endswith("\n") for text in texts)
    assert len(expected) > 10
    assert stored == expected  # same lines, same order: none lost, doubled or merged
