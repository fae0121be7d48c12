"""Queued runs whose dispatch failed transiently are dispatched again by the sweep."""

from __future__ import annotations

import pytest

from connectors.models import ProviderConfig
from execution.models import Run, RunEvent
from execution.reconciler import reconcile_sweep


@pytest.mark.django_db(transaction=True)
def test_a_due_queued_run_without_provider_run_id_is_dispatched_again(fake, make_run, project):
    ProviderConfig.objects.create(project=project, provider_id="fake", enabled=True)
    run = make_run("", status="queued", dispatch_attempts=1)

    report = reconcile_sweep()

    run.refresh_from_db()
    assert report.dispatched == 1
    assert run.provider_run_id == f"sent-{run.pk}"
    assert run.lease_owner == ""
    assert run.next_reconcile_at is not None  # now polled like any external run
    assert RunEvent.objects.filter(run=run, event_type="dispatched").exists()
    assert fake.polls() == []


@pytest.mark.django_db(transaction=True)
def test_a_dispatch_retry_that_crashes_is_not_retried_in_a_hot_loop(fake, make_run, monkeypatch):
    from execution import dispatch

    def crash(run_id):
        raise RuntimeError("boom")

    monkeypatch.setattr(dispatch, "dispatch_run", crash)
    run = make_run("", status="queued", dispatch_attempts=1)

    reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "queued"
    assert run.lease_owner == ""
    assert (run.next_reconcile_at - run.created_at).total_seconds() > 10
    assert reconcile_sweep().claimed == 0


@pytest.mark.django_db
def test_a_queued_run_whose_first_dispatch_is_pending_is_not_touched(fake, make_run):
    run = make_run("", status="queued")
    Run.objects.filter(pk=run.pk).update(next_reconcile_at=None)

    assert reconcile_sweep().claimed == 0
