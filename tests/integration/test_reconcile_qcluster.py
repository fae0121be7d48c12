"""The periodic start with a real qcluster (issue 5, acceptance 1): the
django-q2 schedule that the migration created reconciles a run running on the
GitHub Actions simulator to ``succeeded`` — nobody calls the API or a sweep.

("Migrating three times leaves one schedule" is specified in
``tests/reconcile/test_schedule.py``.)

django-q2's scheduler looks at schedules about every 30 s, the first time
about 30 s after the cluster starts, so the run may take up to ~75 s.
"""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.utils import timezone
from django_q.models import Schedule, Task

from connectors import services
from connectors.base import RunSpec, Secrets
from connectors.providers.github_actions.adapter import GitHubActionsAdapter
from connectors.providers.github_actions.simulator import GitHubActionsSimulator
from execution.models import Run
from execution.reconciler import SCHEDULE_NAME, SCHEDULED_TASK
from tests.factories import RunFactory
from tests.integration.processes import wait_for

pytestmark = [pytest.mark.integration]

schedule_migration = importlib.import_module("execution.migrations.0003_reconcile_schedule")

SETTINGS = {"owner": "ccdash", "repo": "demo", "workflow": "agent.yml", "ref": "main"}
TOKEN = GitHubActionsSimulator.default_token


@pytest.fixture
def github():
    with GitHubActionsSimulator(port=0) as server:
        yield server


@pytest.fixture
def running_on_github(project, github):
    """A run dispatched to the simulator: ``running`` with its provider run id,
    due now. The simulated run finishes on its own a few seconds later."""
    services.update_config(
        project,
        "github_actions",
        actor="test",
        enabled=True,
        settings={**SETTINGS, "baseUrl": github.url},
    )
    services.write_credentials(project, "github_actions", {"token": TOKEN}, user=None)
    run = RunFactory(project=project, provider_id="github_actions", command="echo scheduled")
    adapter = GitHubActionsAdapter(
        settings=GitHubActionsAdapter.validate_config({**SETTINGS, "baseUrl": github.url}),
        secrets=Secrets({"token": TOKEN}),
    )
    dispatched = adapter.dispatch(
        RunSpec(
            run_id=run.pk,
            dispatch_key=run.dispatch_key,
            command=run.command,
            project_id=project.pk,
        )
    )
    Run.objects.filter(pk=run.pk).update(
        status="running",
        started_at=timezone.now(),
        provider_run_id=dispatched.provider_run_id,
        provider_url=dispatched.provider_url,
        provider_status_raw=dispatched.provider_status_raw,
        next_reconcile_at=timezone.now(),
    )
    return Run.objects.get(pk=run.pk)


@pytest.fixture
def migrated_schedule(transactional_db) -> Schedule:
    """The schedule row migrating wrote. A transactional test that ran earlier
    in this session may have flushed the table: the migration's own function
    writes it again then."""
    if not Schedule.objects.filter(name=SCHEDULE_NAME).exists():
        schedule_migration.ensure_reconcile_schedule(apps)
    return Schedule.objects.get(name=SCHEDULE_NAME)


def test_the_migrated_schedule_reconciles_a_simulated_run_to_succeeded_in_a_real_qcluster(
    migrated_schedule, qcluster, running_on_github
):
    schedule = migrated_schedule
    assert schedule.func == SCHEDULED_TASK
    if schedule.next_run > timezone.now():
        Schedule.objects.filter(pk=schedule.pk).update(next_run=timezone.now())

    def reconciled() -> str | None:
        run = Run.objects.get(pk=running_on_github.pk)
        return run.status if run.status == "succeeded" else None

    assert wait_for(reconciled, timeout=75, interval=0.5) == "succeeded"

    run = Run.objects.get(pk=running_on_github.pk)
    assert (run.sync_status, run.provider_status_raw) == ("in_sync", "completed/success")
    assert run.lease_owner == ""

    # The cluster stores the task's result once the task has returned, which
    # may be a moment after its sweep stored the run.
    def task_stored() -> bool | None:
        return Task.objects.filter(func=SCHEDULED_TASK, success=True).exists() or None

    assert wait_for(task_stored, timeout=30, interval=0.5)
