"""Claims with leases: several workers never poll one run at once (spec §6)."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from execution.models import Run
from execution.reconcile import claims as reconcile_claims
from execution.reconciler import Reconciler, reconcile_sweep


def sweep_in_thread(reconciler: Reconciler, start: threading.Barrier, reports: list) -> None:
    try:
        start.wait(timeout=10)
        reports.append(reconciler.sweep())
    finally:
        connections.close_all()
        reconciler.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("batch_size", [40, 15])
def test_two_workers_sweeping_the_same_runs_never_both_poll_one(
    fake, make_run, monkeypatch, batch_size
):
    for n in range(40):
        fake.add(f"p-{n}", "working")
        make_run(f"p-{n}")
    # Both workers read the same candidates before either writes its lease:
    # the race the compare-and-swap (or SKIP LOCKED) must settle.
    candidates_read = threading.Barrier(2)
    seen: set[str] = set()
    original = reconcile_claims._select_candidates

    def racing_select(qs, limit):
        ids = original(qs, limit)
        name = threading.current_thread().name
        if name not in seen:
            seen.add(name)
            # On PostgreSQL the second worker may skip past the locked rows instead.
            with contextlib.suppress(threading.BrokenBarrierError):
                candidates_read.wait(timeout=2)
        return ids

    monkeypatch.setattr(reconcile_claims, "_select_candidates", racing_select)
    start = threading.Barrier(2)
    reports: list = []
    workers = [
        threading.Thread(
            target=sweep_in_thread,
            args=(Reconciler(worker_id=f"worker-{i}", batch_size=batch_size), start, reports),
            name=f"sweeper-{i}",
        )
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)

    polls = Counter(call.provider_run_id for call in fake.polls())
    assert polls and max(polls.values()) == 1
    assert sum(r.claimed for r in reports) == len(polls) == min(40, 2 * batch_size)
    assert Run.objects.exclude(lease_owner="").count() == 0


@pytest.mark.django_db
def test_an_expired_lease_is_taken_over(fake, make_run):
    fake.add("p-1", "working")
    run = make_run(
        "p-1", lease_owner="dead-host:1:abc", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    report = reconcile_sweep()

    assert report.claimed == 1
    run.refresh_from_db()
    assert run.lease_owner == ""
    assert run.last_reconciled_at is not None


@pytest.mark.django_db
def test_a_run_leased_by_a_live_worker_is_left_alone(fake, make_run):
    fake.add("p-1", "working")
    make_run(
        "p-1", lease_owner="busy:1:abc", lease_expires_at=timezone.now() + timedelta(seconds=30)
    )

    assert reconcile_sweep().claimed == 0
    assert fake.polls() == []


@pytest.mark.django_db
def test_a_stop_request_finishes_the_poll_in_flight_and_releases_the_rest(fake, make_run, settings):
    settings.EXECUTION = {
        **settings.EXECUTION,
        "RECONCILE_CONCURRENCY": 1,
        "PROVIDER_CONCURRENCY": 1,
    }
    runs = []
    for n in range(5):
        fake.add(f"p-{n}", "done")
        runs.append(make_run(f"p-{n}", due_in=-10 + n))
    stop = threading.Event()
    fake.on_poll = lambda _id: stop.set()  # SIGTERM arrives during the first poll

    report = reconcile_sweep(stop_event=stop)

    assert len(fake.polls()) == 1
    assert report.claimed == 5
    assert report.released == 4
    first = Run.objects.get(pk=runs[0].pk)
    assert first.status == "succeeded"
    for run in Run.objects.filter(pk__in=[r.pk for r in runs[1:]]):
        assert (run.status, run.lease_owner, run.lease_expires_at) == ("running", "", None)
        assert run.next_reconcile_at <= timezone.now()  # still due for the next worker


@pytest.mark.django_db
def test_a_sweep_that_fails_midway_gives_its_claims_back(fake, make_run, monkeypatch):
    from execution.reconcile import apply as reconcile_apply

    fake.add("p-1", "working")
    run = make_run("p-1")

    def broken_write(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(reconcile_apply, "write_leased", broken_write)

    with pytest.raises(RuntimeError):
        reconcile_sweep()

    run.refresh_from_db()
    assert run.lease_owner == ""


@pytest.mark.django_db
def test_claim_leases_rows_to_the_worker_until_the_lease_time(make_run):
    run = make_run("p-1")
    now = timezone.now()

    ids = reconcile_claims.claim("w-1", now=now, limit=10, lease_s=60)

    run.refresh_from_db()
    assert ids == [run.pk]
    assert run.lease_owner == "w-1"
    assert run.lease_expires_at == now + timedelta(seconds=60)
    assert reconcile_claims.claim("w-2", now=now, limit=10, lease_s=60) == []


@pytest.mark.django_db
def test_claiming_only_runs_due_by_an_earlier_time_still_leases_them_from_now(make_run):
    # The one-shot command claims the runs due when it started, batch after
    # batch: a late batch's lease must run from the claim, not from the start.
    early = make_run("p-1", due_in=-600)
    make_run("p-2", due_in=-10)  # due only after the cut-off
    now = timezone.now()

    ids = reconcile_claims.claim(
        "w-1", now=now, limit=10, lease_s=60, due_by=now - timedelta(seconds=300)
    )

    early.refresh_from_db()
    assert ids == [early.pk]
    assert early.lease_expires_at == now + timedelta(seconds=60)
