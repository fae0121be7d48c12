"""A cancel the provider accepted ends the run ``canceled`` on every provider,
even when the provider then reports its ordinary finished status (Devin may
show ``finished`` after terminating a session; a GitHub run or a Cursor agent
may still report success after the cancel was taken)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connectors import services as provider_services
from execution import services
from execution.dispatch import dispatch_run
from execution.models import Run
from execution.reconciler import reconcile_sweep
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db

PROVIDERS = ("github_actions", "cursor", "devin")
# Native statuses: held running, and the ordinary "finished with success".
RUNNING = {"github_actions": "in_progress", "cursor": "RUNNING", "devin": "working"}
FINISHED = {"github_actions": "success", "cursor": "FINISHED", "devin": "finished"}


@pytest.fixture
def running_on(project, sim_for, monkeypatch):
    """``running_on(provider_id)``: a run dispatched to that provider's
    simulator and held running there; returns (run, simulator)."""
    monkeypatch.setattr(services, "async_task", lambda *args, **kwargs: None)

    def start(provider_id: str):
        sim = sim_for(provider_id)
        provider_services.update_config(
            project,
            provider_id,
            actor="test",
            enabled=True,
            settings={**sim.demo_settings, "baseUrl": sim.url},
        )
        provider_services.write_credentials(project, provider_id, sim.demo_credentials(), user=None)
        run = RunFactory(project=project, provider_id=provider_id, command="echo hi")
        assert dispatch_run(run.pk) == "dispatched"
        run.refresh_from_db()
        sim.set_state(run.provider_run_id, RUNNING[provider_id])
        Run.objects.filter(pk=run.pk).update(status="running")
        return Run.objects.get(pk=run.pk), sim

    return start


def poll_now(run: Run) -> None:
    Run.objects.filter(pk=run.pk).update(next_reconcile_at=timezone.now() - timedelta(seconds=1))
    reconcile_sweep()


@pytest.mark.parametrize("provider_id", PROVIDERS)
def test_a_confirmed_cancel_ends_canceled_even_if_the_provider_then_reports_finished(
    provider_id, running_on, operator
):
    run, sim = running_on(provider_id)
    if provider_id == "devin":
        # DELETE answers 200, and the session then shows "finished".
        sim.configure(terminated_status_enum=FINISHED["devin"])

    services.cancel(run, operator)
    services.cancel_external_run(run.pk)
    run.refresh_from_db()
    assert run.cancel_state == "accepted"
    if run.status == "canceling":
        sim.set_state(run.provider_run_id, FINISHED[provider_id])
        poll_now(run)
        run.refresh_from_db()

    assert run.status == "canceled"
    assert run.provider_status_raw.endswith(FINISHED[provider_id]) or provider_id != "devin"
