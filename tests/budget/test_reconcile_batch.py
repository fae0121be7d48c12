"""The reconciler with a batch-polling provider (GitHub Actions on its
simulator): one listing for many due runs, status stored before the logs, and
a poll cadence paced by the token's request budget."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from connectors import budget, services
from connectors.providers.github_actions import adapter as github_actions
from connectors.providers.github_actions.adapter import GitHubActionsAdapter
from connectors.providers.github_actions.simulator import GitHubActionsSimulator
from execution.models import Run, RunEvent
from execution.reconcile import cadence
from execution.reconcile.schedule import ListingSchedule
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


def test_runs_that_ended_are_read_side_by_side_and_stored_before_any_log_read(
    configured, sim, monkeypatch
):
    """Status first, logs after: runs the in-progress listing leaves out (they
    ended) are read one by one by several of the lane's workers at once, not
    one after the other inside the listing's call, and every new status of
    the sweep is stored before its first log read goes out."""
    sim.set_latency(10)
    ids = sim.seed(40, "running")
    runs = runs_for(configured, ids)
    for run_id in ids:
        sim.set_state(run_id, "success")
    readers: set[str] = set()
    read_alone = GitHubActionsAdapter.poll_status

    def poll_status(self, ref):
        readers.add(threading.current_thread().name)
        return read_alone(self, ref)

    monkeypatch.setattr(GitHubActionsAdapter, "poll_status", poll_status)

    reconcile_sweep()

    stored = Run.objects.filter(pk__in=[run.pk for run in runs])
    assert set(stored.values_list("status", flat=True)) == {"succeeded"}
    assert len(readers) > 1
    log_reads = [entry["time"] for entry in sim.request_log() if entry["kind"] == "list_jobs"]
    assert len(log_reads) == 40
    last_status_stored = max(stored.values_list("ended_at", flat=True))
    assert min(log_reads) >= last_status_stored.timestamp()
    with_lines = RunEvent.objects.filter(run__in=runs, event_type="output").values("run")
    assert with_lines.distinct().count() == 40


def test_the_cadence_stretches_to_fit_the_tokens_budget(configured, sim, settings, monkeypatch):
    base = settings.EXECUTION["RECONCILE_INTERVAL_S"]
    sim.configure(ratelimit_limit=400)  # a nearly spent hour: 400 requests to last it
    ids = sim.seed(20, "running")
    runs_for(configured, ids)
    reconcile_sweep()  # the first round: its cost is not known yet
    first = {run.next_reconcile_at for run in Run.objects.all()}
    assert len(first) == 1  # one slot: the next listing is shared by all
    listing_at = first.pop()
    moved = listing_at - timezone.now()
    real_now, real_time = timezone.now, time.time
    monkeypatch.setattr(timezone, "now", lambda: real_now() + moved)
    monkeypatch.setattr(time, "time", lambda: real_time() + moved.total_seconds())
    github_actions.forget_listings()

    reconcile_sweep()  # the listing's time has come

    due = {run.next_reconcile_at for run in Run.objects.all()}
    assert len(due) == 1
    # One listing request a round; 399 - 50 (reserve) spendable over the hour,
    # aimed at SAFETY of it: 1 / (0.8 * 349 / 3600) = 12.9 s, past the base.
    interval = (due.pop() - listing_at).total_seconds()
    assert base < interval
    assert 12.0 < interval < 14.0


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


def test_a_run_due_before_its_slots_next_listing_waits_for_it(configured, sim, monkeypatch):
    """A run just dispatched (due at once) was read alone, a counted request
    each, although the slot's next listing would answer for it in moments."""
    ids = sim.seed(20, "running")
    runs_for(configured, ids)
    reconcile_sweep()
    listing_at = Run.objects.values_list("next_reconcile_at", flat=True).first()
    fresh_id = sim.seed(1, "queued")[0]
    (fresh,) = runs_for(configured, [fresh_id], status="queued", raw="queued")
    sent = len(sim.request_log())

    report = reconcile_sweep()

    assert report.polled == 0
    assert len(sim.request_log()) == sent  # nothing asked
    fresh.refresh_from_db()
    assert fresh.next_reconcile_at == listing_at and not fresh.lease_owner
    # At the listing, one listing answers for all 21 runs.
    Run.objects.update(next_reconcile_at=timezone.now())
    cadence.listings.clear()
    monkeypatch.setattr(github_actions, "LISTING_REUSE_S", 0.0)
    report = reconcile_sweep()
    assert report.polled == 21
    assert [k for k in kinds(sim)[sent:]] == ["list_runs", "list_runs"]  # in_progress, queued


def test_running_output_due_all_at_once_is_read_within_the_tokens_allowance(
    configured, sim, settings
):
    """Output due by the paced interval fell due for every run at once (runs
    whose output was read together): a burst of two requests per run that ran
    a limited budget down to its reserve."""
    sim.configure(ratelimit_limit=400)
    ids = sim.seed(30, "running")
    runs = runs_for(configured, ids)
    long_ago = timezone.now() - timedelta(hours=2)
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(logs_fetched_at=long_ago)
    reconcile_sweep()  # learns the budget
    Run.objects.update(next_reconcile_at=timezone.now())
    cadence.listings.clear()
    sent = len(sim.request_log())

    reconcile_sweep()

    assert kinds(sim)[sent:].count("list_jobs") <= 1


def test_listing_rounds_get_what_other_spending_leaves():
    now = 1_000_000.0
    known = budget.Budget("github_actions", "k", 5000, 1050, now + 1000, now)
    # (1050 - 100 reserve) / 1000 s = 0.95/s; aimed at 0.8 of it: 0.76/s.
    assert cadence.listing_interval(5.0, known=known, per_round=10, other=0.0, now=now) == (
        pytest.approx(10 / 0.76)
    )
    # Final logs, cancels, other processes: paid first.
    assert cadence.listing_interval(5.0, known=known, per_round=10, other=0.36, now=now) == (
        pytest.approx(10 / 0.40)
    )
    # However much they spend, status keeps its floor (a quarter).
    assert cadence.listing_interval(5.0, known=known, per_round=10, other=9.0, now=now) == (
        pytest.approx(10 / 0.19)
    )
    # Never below the base, never past the reset; the base until measured.
    assert cadence.listing_interval(5.0, known=known, per_round=1, other=0.0, now=now) == 5.0
    assert cadence.listing_interval(5.0, known=known, per_round=None, other=0.0, now=now) == 5.0
    spent = budget.Budget("github_actions", "k", 5000, 100, now + 1000, now)
    assert cadence.listing_interval(5.0, known=spent, per_round=10, other=0.0, now=now) == 1000


def test_the_one_shot_command_polls_every_due_run_whatever_the_schedule(configured, sim):
    """``manage.py reconcile`` (once) reconciles every run due when it starts,
    even those a loop would hold back for their slot's next listing."""
    from execution.reconciler import Reconciler, reconcile_all_due

    ids = sim.seed(5, "running")
    runs_for(configured, ids)
    reconcile_sweep()  # the slot's next listing is set
    fresh_id = sim.seed(1, "queued")[0]
    (fresh,) = runs_for(configured, [fresh_id], status="queued", raw="queued")

    with Reconciler() as reconciler:
        report = reconcile_all_due(reconciler)

    assert report.polled == 1
    fresh.refresh_from_db()
    assert fresh.last_reconciled_at > fresh.created_at


def test_a_run_waiting_for_its_listing_still_gets_its_due_output_read(configured, sim):
    """A workflow_job delivery makes a running run's output due at once; its
    status waits for the slot's next listing, its lines do not."""
    ids = sim.seed(3, "running")
    runs = runs_for(configured, ids)
    reconcile_sweep()
    listing_at = Run.objects.values_list("next_reconcile_at", flat=True).first()
    # What execution.webhooks does for a workflow_job delivery:
    now = timezone.now()
    Run.objects.filter(pk=runs[0].pk).update(
        logs_fetched_at=now - timedelta(days=1), next_reconcile_at=now
    )
    sent = len(sim.request_log())

    reconcile_sweep()

    assert kinds(sim)[sent:] == ["list_jobs", "job_logs"]
    run = Run.objects.get(pk=runs[0].pk)
    assert run.next_reconcile_at == listing_at
    assert run.logs_fetched_at > now - timedelta(minutes=1)


def test_a_slot_whose_runs_are_gone_no_longer_stretches_the_tokens_listings():
    """Two projects on one token: a round is both projects' listings. Once
    one project has no active runs left, its listings stopped; its old round
    cost kept stretching the other's interval."""
    schedule = ListingSchedule()
    token = ("github_actions", "k")
    first, second = (1, "github_actions"), (2, "github_actions")
    for at in (1000.0, 1020.0):
        schedule.next_at(first, token, at, 10.0, lambda: 20.0)
        schedule.next_at(second, token, at, 30.0, lambda: 20.0)
    assert schedule.round_cost(token, 1020.0) == 40.0

    for at in (1040.0, 1060.0, 1080.0, 1100.0, 1120.0):  # the second's runs ended
        schedule.next_at(first, token, at, 10.0, lambda: 20.0)

    assert schedule.round_cost(token, 1120.0) == 10.0


def test_a_new_batchs_listing_goes_ahead_of_the_single_reads_already_queued(
    configured, sim, monkeypatch
):
    """A backlog of runs that ended, claimed batch after batch: each new
    batch's listing is taken while the previous batch's single reads still
    wait, so the lane's workers never run out of reads while it lists (behind
    them, every worker but one fell idle at each batch boundary)."""
    from execution.reconcile.pool import Lane
    from execution.reconciler import Reconciler, reconcile_all_due

    sim.set_latency(30)
    ids = sim.seed(30, "running")
    runs = runs_for(configured, ids)
    for run_id in ids:
        sim.set_state(run_id, "success")
    singles_waiting_at_listing: list[int] = []
    take = Lane.take

    def spy(self):
        group = take(self)
        if len(group) > 1:  # a listing's runs
            singles_waiting_at_listing.append(sum(1 for item in self.queue if item.alone))
        return group

    monkeypatch.setattr(Lane, "take", spy)

    with Reconciler(batch_size=10, provider_concurrency=2) as reconciler:
        report = reconcile_all_due(reconciler)

    assert report.changed == 30
    stored = Run.objects.filter(pk__in=[run.pk for run in runs])
    assert set(stored.values_list("status", flat=True)) == {"succeeded"}
    assert len(singles_waiting_at_listing) == 3
    first, *later = singles_waiting_at_listing
    assert first == 0
    assert all(waiting > 0 for waiting in later), singles_waiting_at_listing
