"""Each real adapter, against its simulator, reconciled from dispatch to its
true final state by sweeps alone (no API call), with its output stored once."""

from __future__ import annotations

import time

import pytest

from connectors import services as connector_services
from connectors.simulators import simulator_classes
from execution.models import Run, RunEvent
from execution.reconciler import reconcile_sweep
from execution.services import RunRequest, create_run
from tests.reconcile.conftest import make_due

pytestmark = pytest.mark.django_db

PROVIDERS = list(simulator_classes())


@pytest.fixture(scope="module")
def simulators():
    servers = {pid: cls(port=0).start() for pid, cls in simulator_classes().items()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.mark.parametrize("provider_id", PROVIDERS)
def test_a_simulated_run_is_reconciled_to_succeeded_by_sweeps_alone(
    provider_id, simulators, project, operator, django_capture_on_commit_callbacks
):
    sim = simulators[provider_id]
    sim.reset()
    connector_services.update_config(
        project,
        provider_id,
        actor="test",
        enabled=True,
        settings={**sim.demo_settings, "baseUrl": sim.url},
    )
    connector_services.write_credentials(project, provider_id, sim.demo_credentials(), user=None)
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = create_run(
            project, operator, RunRequest(command="echo hi", provider_id=provider_id)
        )
    run.refresh_from_db()
    assert run.provider_run_id, run.status_reason

    deadline = time.monotonic() + 20
    while run.status != "succeeded" and time.monotonic() < deadline:
        make_due(run)
        reconcile_sweep()
        run.refresh_from_db()
        time.sleep(0.3)

    assert (run.status, run.sync_status, run.lease_owner) == ("succeeded", "in_sync", "")
    assert run.provider_status_raw
    changes = list(
        RunEvent.objects.filter(run=run, event_type="status_changed").values_list(
            "payload__to", flat=True
        )
    )
    assert changes[-1] == "succeeded"
    output = list(
        RunEvent.objects.filter(run=run, event_type="output").values_list("text", flat=True)
    )
    assert output  # the provider's output arrived...
    assert len(output) == len(set(output))  # ...each line once, across many polls
    assert Run.objects.get(pk=run.pk).next_reconcile_at is None
