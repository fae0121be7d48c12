"""The reconciler with a batch-polling provider (GitHub Actions on its
simulator): one listing for many due runs, status stored before the logs, and
a poll cadence paced by the token's request budget."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connectors import budget, services
from connectors.providers.github_actions.simulator import GitHubActionsSimulator
from execution.models import Run, RunEvent
from execution.reconciler import reconcile_sweep
from tests.factories import RunFactory

TOKEN = GitHubActionsSimulator.default_token
SETTINGS = {"owner": "ccdash", "repo": "demo", "workflow": "agent.yml", "ref": "main"}

pytestmark = pytest.mark.django_db


@pytest.fixture
def sim():
    with GitHubActionsSimulator() as simulator:
        yield simulator


@pytest.fixture
def configured(project, sim):
    services.update_config(
        project,
        "github_actions",
        actor="test",
        enabled=True,
        settings={**SETTINGS, "baseUrl": sim.url},
    )
    services.write_credentials(project, "github_actions", {"token": TOKEN}, user=None)
    return project


def runs_for(project, ids, status="running", raw="in_progress"):
    now = timezone.now()
    runs = [
        RunFactory(
            project=project,
            provider_id="github_actions",
            provider_run_id=run_id,
            status=status,
            provider_status_raw=raw,
            next_reconcile_at=now,
            logs_fetched_at=now,
            last_reconciled_at=now,
        )
        for run_id in ids
    ]
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(created_at=now - timedelta(minutes=10))
    return runs


def kinds(sim):
    return [entry["kind"] for entry in sim.request_log()]


def test_one_listing_answers_for_every_due_run(configured, sim):
    ids = sim.seed(30, "running")
    runs_for(configured, ids)

    report = reconcile_sweep()

    assert report.polled == 30
    assert kinds(sim) == ["list_runs"]
    assert set(Run.objects.values_list("sync_status", flat=True)) == {"in_sync"}


def test_a_finished_run_is_stored_ended_and_its_last_lines_follow(configured, sim):
    ids = sim.seed(5, "running")
    runs = runs_for(configured, ids)
    sim.set_state(ids[0], "success")

    reconcile_sweep()

    ended = Run.objects.get(pk=runs[0].pk)
    assert ended.status == "succeeded" and ended.next_reconcile_at is None
    assert RunEvent.objects.filter(run=ended, event_type="output").exists()
    assert ended.log_cursor  # the cursor of the lines stored
    # The others' logs were not due: only the listing, the ended run's read and its logs.
    assert sorted(set(kinds(sim))) == ["get_run", "job_logs", "list_jobs", "list_runs"]
    assert kinds(sim).count("list_runs") == 1


def test_the_cadence_stretches_to_fit_the_tokens_budget(configured, sim, settings):
    base = settings.EXECUTION["RECONCILE_INTERVAL_S"]
    sim.configure(ratelimit_limit=400)  # a nearly spent hour: 400 requests to last it
    ids = sim.seed(20, "running")
    runs_for(configured, ids)

    reconcile_sweep()

    due = {run.next_reconcile_at.timestamp() for run in Run.objects.all()}
    assert len(due) == 1  # one slot: the next listing is shared by all
    # On a grid of base * 2**k stretched past the base: 349 spendable requests
    # for the hour, a listing for every round.
    assert round(due.pop(), 3) % (4 * base) == 0


def test_with_a_plentiful_budget_the_base_interval_holds(configured, sim, settings):
    base = settings.EXECUTION["RECONCILE_INTERVAL_S"]
    ids = sim.seed(3, "running")
    runs_for(configured, ids)
    start = timezone.now()

    reconcile_sweep()

    for run in Run.objects.all():
        assert (run.next_reconcile_at - start).total_seconds() <= base + 0.5


def test_a_sweep_shares_what_it_learnt_about_the_budget(configured, sim):
    ids = sim.seed(2, "running")
    runs_for(configured, ids)

    reconcile_sweep()
    reconcile_sweep()  # publishes what the first one saw

    stored = budget.shared_store().load()
    assert [(b.provider_id, b.key) for b in stored] == [("github_actions", budget.token_key(TOKEN))]
    assert stored[0].remaining < 5000
