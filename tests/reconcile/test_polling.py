"""A due external run is polled, its native status mapped and stored (spec §3, §6)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from execution.models import Run, RunEvent
from execution.reconciler import Reconciler, reconcile_sweep
from tests.reconcile.conftest import make_due

pytestmark = pytest.mark.django_db


def events(run, event_type=None):
    qs = RunEvent.objects.filter(run=run).order_by("sequence_no")
    if event_type:
        qs = qs.filter(event_type=event_type)
    return list(qs)


def test_a_due_run_moves_through_mapped_states_to_succeeded_with_events(fake, make_run):
    fake.add("p-1", "pending", "working", "done")
    run = make_run("p-1", status="queued")

    reconcile_sweep()
    run.refresh_from_db()
    assert (run.status, run.provider_status_raw, run.sync_status) == (
        "queued",
        "pending",
        "in_sync",
    )

    make_due(run)
    reconcile_sweep()
    run.refresh_from_db()
    assert run.status == "running"
    assert run.started_at is not None

    make_due(run)
    report = reconcile_sweep()
    run.refresh_from_db()
    assert report.changed == 1
    assert (run.status, run.provider_status_raw, run.sync_status) == (
        "succeeded",
        "done",
        "in_sync",
    )
    assert run.ended_at is not None
    assert run.next_reconcile_at is None
    assert run.lease_owner == ""
    assert run.provider_url == "https://fake.invalid/runs/p-1"
    changes = [(e.payload["from"], e.payload["to"]) for e in events(run, "status_changed")]
    assert changes == [("queued", "running"), ("running", "succeeded")]
    assert "Scripted fake reports 'done'" in events(run, "status_changed")[-1].text


def test_an_in_sync_poll_schedules_the_next_one_at_the_normal_interval(fake, make_run):
    fake.add("p-1", "working")
    run = make_run("p-1", reconcile_attempts=3, sync_status="stale", last_sync_error="x")
    before = timezone.now()

    reconcile_sweep()

    run.refresh_from_db()
    assert run.sync_status == "in_sync"
    assert run.reconcile_attempts == 0
    assert run.last_sync_error == ""
    assert run.sync_failing_since is None
    assert run.last_reconciled_at >= before
    gap = (run.next_reconcile_at - run.last_reconciled_at).total_seconds()
    assert gap == pytest.approx(5.0)


def test_a_run_that_is_not_due_is_not_polled(fake, make_run):
    fake.add("p-1", "done")
    run = make_run("p-1", due_in=30)

    report = reconcile_sweep()

    assert report.claimed == 0
    assert fake.polls() == []
    run.refresh_from_db()
    assert run.status == "running"


def test_terminal_and_local_runs_are_never_polled(fake, make_run):
    fake.add("p-1", "working")
    make_run("p-1", status="succeeded")
    make_run("p-2", provider_id="local", status="running", heartbeat_at=timezone.now())

    assert reconcile_sweep().claimed == 0
    assert fake.polls() == []


def test_an_unknown_native_status_keeps_the_status_and_marks_the_run_error(fake, make_run):
    fake.add("p-1", "teleporting")
    run = make_run("p-1")

    report = reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "running"
    assert run.provider_status_raw == "teleporting"
    assert run.sync_status == "error"
    assert run.last_sync_error == "unknown provider status 'teleporting'"
    gap = (run.next_reconcile_at - timezone.now()).total_seconds()
    assert 55 < gap <= 60
    assert report.errors == {"unknown_status": 1}


def test_a_status_the_table_forbids_is_kept_out_and_reported_once(fake, make_run):
    fake.add("p-1", "pending")  # running → queued is not a transition
    run = make_run("p-1", provider_status_raw="working")

    reconcile_sweep()
    make_due(run)
    reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "running"
    assert run.provider_status_raw == "pending"
    assert run.sync_status == "in_sync"
    assert len(events(run, "unexpected_provider_status")) == 1


def test_a_canceling_run_waits_quietly_until_the_provider_confirms(fake, make_run):
    fake.add("p-1", "working", "stopped")
    run = make_run("p-1", status="canceling", provider_status_raw="working")

    reconcile_sweep()
    run.refresh_from_db()
    assert run.status == "canceling"
    assert events(run, "unexpected_provider_status") == []

    make_due(run)
    reconcile_sweep()
    run.refresh_from_db()
    assert run.status == "canceled"


def test_a_run_canceled_while_it_was_polled_is_not_overwritten(fake, make_run):
    fake.add("p-1", "done")
    run = make_run("p-1")
    # A user's cancel lands between the claim and the write.
    fake.on_poll = lambda _id: Run.objects.filter(pk=run.pk).update(status="canceling")

    with Reconciler(inline=True) as reconciler:  # inline: the hook's write shares our DB
        reconciler.sweep()

    run.refresh_from_db()
    assert run.status == "canceling"  # the provider's answer lost the compare-and-swap
    assert run.lease_owner == ""


def test_a_provider_filter_polls_only_that_providers_runs(fake, other, make_run):
    fake.add("p-1", "working")
    other.add("o-1", "working")
    make_run("p-1")
    make_run("o-1", provider_id="other")

    report = reconcile_sweep(provider_id="other")

    assert report.claimed == 1
    assert fake.polls() == []
    assert len(other.polls()) == 1


def test_a_batch_claims_oldest_due_first(fake, make_run):
    for n in range(5):
        fake.add(f"p-{n}", "working")
    runs = [make_run(f"p-{n}", due_in=-(n + 1)) for n in range(5)]

    reconcile_sweep(batch_size=2)

    assert {c.provider_run_id for c in fake.polls()} == {"p-4", "p-3"}
    assert Run.objects.get(pk=runs[0].pk).last_reconciled_at is None


def test_unchanged_runs_are_stored_in_batches_not_one_query_per_run(fake, make_run):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries_for(count: int, prefix: str) -> int:
        runs = []
        for n in range(count):
            fake.add(f"{prefix}-{n}", "working")
            runs.append(make_run(f"{prefix}-{n}", provider_status_raw="working", due_in=-1))
        reconcile_sweep()  # first contact: provider URLs, counter rows
        make_due(*runs)
        with CaptureQueriesContext(connection) as context:
            report = reconcile_sweep()
        assert report.polled == count
        Run.objects.filter(pk__in=[r.pk for r in runs]).update(status="succeeded")
        return len(context)

    few, many = queries_for(10, "a"), queries_for(300, "b")

    # A few more batched UPDATEs (one per flush of up to 250 rows), nothing per run.
    assert many - few <= 9
    assert many <= 35
    assert Run.objects.exclude(lease_owner="").count() == 0


def test_an_exit_code_from_the_provider_is_stored(fake, make_run):
    fake.add("p-1", "error")
    fake.exit_code = 3
    run = make_run("p-1")

    reconcile_sweep()

    run.refresh_from_db()
    assert (run.status, run.exit_code) == ("failed", 3)


def test_a_due_run_is_claimed_even_when_its_due_time_is_long_past(fake, make_run):
    fake.add("p-1", "working")
    run = make_run("p-1", due_in=-3600)

    report = reconcile_sweep()

    assert report.claimed == 1
    assert report.lag_s >= 3600
    run.refresh_from_db()
    assert run.next_reconcile_at > timezone.now() + timedelta(seconds=4)


def test_a_canceling_run_whose_provider_reports_a_failure_ends_canceled(fake, make_run):
    fake.add("p-1", "error")  # e.g. Devin shows 'expired' for a session we deleted
    run = make_run("p-1", status="canceling", provider_status_raw="working")

    reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "canceled"


def test_a_canceling_run_that_succeeded_first_stays_succeeded(fake, make_run):
    fake.add("p-1", "done")
    run = make_run("p-1", status="canceling", provider_status_raw="working")

    reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "succeeded"
