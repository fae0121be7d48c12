"""A hanging provider holds up no other provider's runs (spec §6, issue 5 acceptance 3)."""

from __future__ import annotations

import threading
import time

import pytest

from connectors.errors import ProviderTimeout
from execution.models import Run
from execution.reconciler import Reconciler, reconcile_sweep

pytestmark = pytest.mark.django_db

HANG_S = 1.5


def test_a_hanging_provider_does_not_delay_another_providers_runs(fake, other, make_run, settings):
    settings.EXECUTION = {
        **settings.EXECUTION,
        "RECONCILE_CONCURRENCY": 4,
        "PROVIDER_CONCURRENCY": 2,
        "CIRCUIT_FAILURE_THRESHOLD": 2,
    }
    for n in range(10):
        other.add(f"slow-{n}", "working")
        make_run(f"slow-{n}", provider_id="other")
    for n in range(30):
        fake.add(f"p-{n}", "done")
        make_run(f"p-{n}")

    lock = threading.Lock()
    hanging = peak = 0

    def hang():
        nonlocal hanging, peak
        with lock:
            hanging += 1
            peak = max(peak, hanging)
        time.sleep(HANG_S)  # what a read timeout looks like from here
        with lock:
            hanging -= 1
        return ProviderTimeout("GET /runs timed out")

    other.failure = hang
    started = time.time()

    report = reconcile_sweep()

    fast = Run.objects.filter(provider_id="fake")
    assert fast.filter(status="succeeded").count() == 30
    stored_by = max(fast.values_list("last_reconciled_at", flat=True)).timestamp()
    # Every fast run was stored while the hanging calls were still in flight...
    assert stored_by - started < HANG_S * 0.6
    # ...and the hanging provider held at most its own share of the threads.
    assert peak <= 2
    # Its runs: two failures tripped the breaker (plus at most cap - 1 already sent),
    # the rest were skipped and rescheduled.
    polled = len(other.polls())
    assert 2 <= polled <= 3
    assert report.errors == {"timeout": polled, "circuit_open": 10 - polled}
    assert Run.objects.filter(provider_id="other", status="running").count() == 10


def test_concurrency_per_provider_never_exceeds_its_cap(fake, make_run, settings):
    settings.EXECUTION = {
        **settings.EXECUTION,
        "RECONCILE_CONCURRENCY": 8,
        "PROVIDER_CONCURRENCY": 3,
    }
    lock = threading.Lock()
    current = peak = 0

    def track(_id):
        nonlocal current, peak
        with lock:
            current += 1
            peak = max(peak, current)
        time.sleep(0.02)
        with lock:
            current -= 1

    fake.on_poll = track
    for n in range(20):
        fake.add(f"p-{n}", "working")
        make_run(f"p-{n}")

    reconcile_sweep()

    assert peak == 3


def test_stuck_calls_stop_counting_toward_the_global_limit(fake, other, make_run, settings):
    settings.EXECUTION = {
        **settings.EXECUTION,
        "RECONCILE_CONCURRENCY": 4,
        "PROVIDER_CONCURRENCY": 3,
        "RECONCILE_STUCK_AFTER_S": 0.1,
        "CIRCUIT_FAILURE_THRESHOLD": 99,
    }
    release = threading.Event()
    other.on_poll = lambda _id: release.wait(5)
    for n in range(3):
        other.add(f"slow-{n}", "working")
        make_run(f"slow-{n}", provider_id="other", due_in=-100)
    lock = threading.Lock()
    current = peak = 0

    def track(_id):
        nonlocal current, peak
        with lock:
            current += 1
            peak = max(peak, current)
        time.sleep(0.05)
        with lock:
            current -= 1

    fake.on_poll = track
    for n in range(40):
        fake.add(f"p-{n}", "working")
        make_run(f"p-{n}")

    threading.Timer(1.5, release.set).start()
    reconcile_sweep()

    # Three hanging calls would leave one of the four slots; once they are
    # stuck, the other provider gets its full share back.
    assert peak == 3


def test_in_loop_mode_a_sweep_does_not_wait_for_a_hanging_provider(fake, other, make_run, settings):
    settings.EXECUTION = {
        **settings.EXECUTION,
        "RECONCILE_CONCURRENCY": 4,
        "PROVIDER_CONCURRENCY": 2,
        "RECONCILE_STUCK_AFTER_S": 0.1,
    }
    release = threading.Event()
    answered = threading.Semaphore(0)

    def hang(_id):
        release.wait(10)
        answered.release()

    other.on_poll = hang
    for n in range(5):
        other.add(f"slow-{n}", "done")
        make_run(f"slow-{n}", provider_id="other")
    for n in range(10):
        fake.add(f"p-{n}", "done")
        make_run(f"p-{n}")

    with Reconciler() as reconciler:
        started = time.monotonic()
        first = reconciler.sweep(wait_for_stuck=False)
        took = time.monotonic() - started

        assert took < 1.0
        assert Run.objects.filter(provider_id="fake", status="succeeded").count() == 10
        # Two calls hang (its cap); the three runs behind them were rescheduled.
        assert first.errors == {"provider_hanging": 3}
        hanging = Run.objects.filter(provider_id="other").exclude(lease_owner="")
        assert hanging.count() == 2

        release.set()
        # Both hanging calls have their answer (however loaded the machine is).
        assert answered.acquire(timeout=5) and answered.acquire(timeout=5)
        time.sleep(0.05)
        second = reconciler.sweep(wait_for_stuck=False)

    assert second.polled == 2  # the calls of the first sweep, collected by the second
    assert Run.objects.filter(provider_id="other", status="succeeded").count() == 2
    assert Run.objects.exclude(lease_owner="").count() == 0


def test_closing_the_reconciler_finishes_and_stores_calls_still_in_flight(fake, make_run, settings):
    settings.EXECUTION = {**settings.EXECUTION, "RECONCILE_STUCK_AFTER_S": 0.05}
    fake.add("p-1", "done")
    run = make_run("p-1")
    fake.on_poll = lambda _id: time.sleep(0.5)

    with Reconciler() as reconciler:
        reconciler.sweep(wait_for_stuck=False)
        run.refresh_from_db()
        assert run.status == "running"  # still in flight when the sweep returned

    run.refresh_from_db()
    assert (run.status, run.lease_owner) == ("succeeded", "")


def test_in_loop_mode_a_hanging_providers_due_runs_are_left_unclaimed(
    fake, other, make_run, settings
):
    settings.EXECUTION = {
        **settings.EXECUTION,
        "RECONCILE_CONCURRENCY": 4,
        "PROVIDER_CONCURRENCY": 2,
        "RECONCILE_STUCK_AFTER_S": 0.1,
    }
    release = threading.Event()
    other.on_poll = lambda _id: release.wait(10)
    for n in range(2):
        other.add(f"slow-{n}", "working")
        make_run(f"slow-{n}", provider_id="other")

    with Reconciler() as reconciler:
        reconciler.sweep(wait_for_stuck=False)  # both of its calls hang
        time.sleep(0.2)  # ...long enough to count as stuck
        for n in range(3):
            other.add(f"later-{n}", "working")
            make_run(f"later-{n}", provider_id="other")
        for n in range(5):
            fake.add(f"p-{n}", "done")
            make_run(f"p-{n}")

        second = reconciler.sweep(wait_for_stuck=False)

        assert second.claimed == 5  # only the healthy provider's runs
        assert Run.objects.filter(provider_id="fake", status="succeeded").count() == 5
        later = Run.objects.filter(provider_run_id__startswith="later-")
        assert list(later.values_list("lease_owner", flat=True)) == ["", "", ""]
        assert not [c for c in other.polls() if c.provider_run_id.startswith("later-")]
        release.set()
