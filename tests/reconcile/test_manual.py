"""Manual reconciliation: ``reconcile_run``, the API action and ``manage.py reconcile``."""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import pytest
from django.core.management import CommandError, call_command

from execution.models import Run, RunEvent
from execution.reconciler import reconcile_run

pytestmark = pytest.mark.django_db


def test_reconcile_run_polls_a_run_that_is_not_due_and_records_who_asked(fake, make_run):
    fake.add("p-1", "done")
    run = make_run("p-1", due_in=300)

    refreshed = reconcile_run(run.pk, actor="alice")

    assert refreshed.status == "succeeded"
    event = RunEvent.objects.get(run=run, event_type="reconcile_requested")
    assert (event.actor, event.text) == ("alice", "Reconcile requested by alice")


def test_reconcile_run_of_a_terminal_run_only_records_the_request(fake, make_run):
    run = make_run("p-1", status="failed")

    assert reconcile_run(run.pk).status == "failed"
    assert fake.polls() == []
    assert RunEvent.objects.filter(run=run, event_type="reconcile_requested").count() == 1


def test_reconcile_run_leaves_a_run_another_worker_is_polling_to_it(fake, make_run):
    from datetime import timedelta

    from django.utils import timezone

    fake.add("p-1", "done")
    run = make_run(
        "p-1", lease_owner="busy:1:a", lease_expires_at=timezone.now() + timedelta(seconds=30)
    )

    assert reconcile_run(run.pk).status == "running"
    assert fake.polls() == []


def test_reconcile_run_of_a_missing_run_raises(db):
    with pytest.raises(Run.DoesNotExist):
        reconcile_run(987654)


def test_post_reconcile_answers_200_with_the_refreshed_run(fake, make_run, operator_client):
    fake.add("p-1", "needs_input")
    run = make_run("p-1", due_in=300)

    response = operator_client.post(f"/api/execution/runs/{run.pk}/reconcile")

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["status"], body["syncStatus"]) == (run.pk, "waiting", "in_sync")
    assert body["providerStatusRaw"] == "needs_input"
    event = RunEvent.objects.get(run=run, event_type="reconcile_requested")
    assert event.actor.startswith("operator")


def test_manage_py_reconcile_run_prints_the_runs_state(fake, make_run):
    fake.add("p-1", "working")
    run = make_run("p-1", due_in=300)
    out = io.StringIO()

    call_command("reconcile", "--run", str(run.pk), stdout=out)

    assert out.getvalue().strip() == (
        f"run {run.pk}: provider=fake status=running syncStatus=in_sync providerStatusRaw=working"
    )


def test_manage_py_reconcile_run_of_an_unknown_run_is_an_error(db):
    with pytest.raises(CommandError, match="Run 987654 does not exist"):
        call_command("reconcile", "--run", "987654")


def test_manage_py_reconcile_prints_one_progress_line_per_sweep(fake, make_run):
    fake.add("p-1", "done")
    make_run("p-1")
    out = io.StringIO()

    call_command("reconcile", "--provider", "fake", stdout=out)

    line = out.getvalue().strip()
    assert line.startswith("sweep claimed=1 polled=1 changed=1 errors=0 stale=0")
    assert " duration=" in line and " lag=" in line


def test_manage_py_reconcile_once_reconciles_every_due_run_not_just_one_batch(
    fake, make_run, settings
):
    settings.EXECUTION = {**settings.EXECUTION, "RECONCILE_BATCH_SIZE": 3}
    for n in range(8):  # almost three batches
        fake.add(f"p-{n}", "done")
        make_run(f"p-{n}")
    fake.add("later", "done")
    make_run("later", due_in=300)
    out = io.StringIO()

    call_command("reconcile", stdout=out)

    assert Run.objects.filter(status="succeeded").count() == 8
    assert Run.objects.get(provider_run_id="later").status == "running"
    assert sorted(c.provider_run_id for c in fake.polls()) == sorted(f"p-{n}" for n in range(8))
    assert "claimed=8 polled=8 changed=8" in out.getvalue()


def test_manage_py_reconcile_once_does_not_poll_twice_the_runs_it_rescheduled(
    fake, make_run, settings
):
    settings.EXECUTION = {
        **settings.EXECUTION,
        "RECONCILE_BATCH_SIZE": 2,
        "RECONCILE_INTERVAL_S": 0.0,  # a run it stores is due again at once
    }
    for n in range(5):
        fake.add(f"p-{n}", "working")
        make_run(f"p-{n}")

    call_command("reconcile", stdout=io.StringIO())

    assert len(fake.polls()) == 5
    assert Run.objects.exclude(lease_owner="").count() == 0


def test_manage_py_reconcile_loop_stops_on_sigterm_and_releases_its_claims(
    fake, make_run, settings
):
    settings.EXECUTION = {
        **settings.EXECUTION,
        "RECONCILE_CONCURRENCY": 1,
        "PROVIDER_CONCURRENCY": 1,
    }
    for n in range(4):
        fake.add(f"p-{n}", "working")
        make_run(f"p-{n}", due_in=-10 + n)
    sent = threading.Event()

    def sigterm_once(_id):
        if not sent.is_set():
            sent.set()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the handler runs on the main thread meanwhile

    fake.on_poll = sigterm_once
    out = io.StringIO()
    previous = signal.getsignal(signal.SIGTERM)

    call_command("reconcile", "--loop", "--interval", "0.1", stdout=out)  # returns: exit 0

    lines = out.getvalue().strip().splitlines()
    assert lines[0].endswith("started") and lines[-1].endswith("stopped")
    assert "claimed=4 polled=1" in lines[1] and "released=3" in lines[1]
    assert Run.objects.exclude(lease_owner="").count() == 0
    assert len(fake.polls()) == 1
    assert signal.getsignal(signal.SIGTERM) is previous
