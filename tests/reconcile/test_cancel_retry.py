"""A cancel the provider refused is sent again by the reconciler, with
backoff, until the provider accepts it or the run ends; once the provider
accepted it, the run ends canceled whatever status the provider reports."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connectors.errors import AuthError
from execution import services
from execution.models import Run, RunEvent
from execution.reconciler import reconcile_sweep
from tests.reconcile.conftest import make_due

pytestmark = pytest.mark.django_db


def refused():
    return AuthError("cancel rejected: bad credentials", status_code=401)


def event_types(run) -> list[str]:
    return list(
        RunEvent.objects.filter(run=run)
        .order_by("sequence_no")
        .values_list("event_type", flat=True)
    )


def backoff_passed(run) -> None:
    Run.objects.filter(pk=run.pk).update(cancel_next_at=timezone.now() - timedelta(seconds=1))
    make_due(run)


@pytest.fixture
def no_tasks(monkeypatch):
    """The cancel task is queued, not run: the test runs it when it wants."""
    queued: list[tuple] = []
    monkeypatch.setattr(services, "async_task", lambda *args, **kw: queued.append(args))
    return queued


def request_cancel(run, user, django_capture_on_commit_callbacks) -> Run:
    with django_capture_on_commit_callbacks(execute=True):
        services.cancel(Run.objects.get(pk=run.pk), user)
    return Run.objects.get(pk=run.pk)


def test_a_cancel_refused_once_is_confirmed_after_the_provider_recovers(
    fake, make_run, operator, no_tasks, django_capture_on_commit_callbacks
):
    fake.add("p-1", "working")
    run = make_run("p-1")
    fake.cancel_failure = refused

    run = request_cancel(run, operator, django_capture_on_commit_callbacks)
    assert services.cancel_external_run(run.pk) == "failed"

    run.refresh_from_db()
    assert (run.status, run.cancel_state, run.cancel_attempts) == ("canceling", "pending", 1)
    assert "cancel rejected" in run.cancel_error
    assert "cancel_failed" in event_types(run)

    fake.cancel_failure = None  # the provider recovers
    backoff_passed(run)
    reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "canceled"
    assert run.cancel_state == "accepted"
    assert len(fake.cancels()) == 2
    assert event_types(run)[-2:] == ["cancel_accepted", "status_changed"]


def test_a_refused_cancel_is_retried_with_growing_backoff_not_on_every_poll(
    fake, make_run, operator, no_tasks, django_capture_on_commit_callbacks
):
    fake.add("p-1", "working")
    run = make_run("p-1")
    fake.cancel_failure = refused
    run = request_cancel(run, operator, django_capture_on_commit_callbacks)
    services.cancel_external_run(run.pk)
    run.refresh_from_db()
    first_gap = (run.cancel_next_at - timezone.now()).total_seconds()

    make_due(run)
    reconcile_sweep()  # polled, but the backoff has not passed: not sent
    assert len(fake.cancels()) == 1

    backoff_passed(run)
    reconcile_sweep()  # sent again with the poll, refused again
    run.refresh_from_db()
    second_gap = (run.cancel_next_at - timezone.now()).total_seconds()

    assert len(fake.cancels()) == 2
    assert run.status == "canceling" and run.cancel_attempts == 2
    assert second_gap >= first_gap
    assert event_types(run).count("cancel_failed") == 2


def test_the_reconciler_sends_a_cancel_the_task_never_sent(
    fake, make_run, operator, no_tasks, django_capture_on_commit_callbacks
):
    fake.add("p-1", "working")
    run = make_run("p-1")
    run = request_cancel(run, operator, django_capture_on_commit_callbacks)

    backoff_passed(run)  # the task never ran (worker down)
    reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "canceled"
    assert len(fake.cancels()) == 1


def test_a_provider_that_accepted_the_cancel_then_reports_success_ends_canceled(
    fake, make_run, operator, no_tasks, django_capture_on_commit_callbacks
):
    fake.add("p-1", "working")
    fake.after_cancel = "done"  # the provider reports its ordinary finished status
    run = make_run("p-1")
    run = request_cancel(run, operator, django_capture_on_commit_callbacks)

    assert services.cancel_external_run(run.pk) == "requested"
    make_due(run)
    reconcile_sweep()

    run.refresh_from_db()
    assert run.provider_status_raw == "done"
    assert run.status == "canceled"


def test_a_run_that_succeeded_before_the_cancel_was_taken_stays_succeeded(
    fake, make_run, operator, no_tasks, django_capture_on_commit_callbacks
):
    fake.add("p-1", "working")
    run = make_run("p-1")
    fake.cancel_failure = refused
    run = request_cancel(run, operator, django_capture_on_commit_callbacks)
    services.cancel_external_run(run.pk)
    fake.runs["p-1"].statuses = ["done"]  # it finished on its own meanwhile

    make_due(run)
    reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "succeeded"


def test_cancel_again_sends_it_again_and_says_it_is_not_confirmed(
    fake,
    make_run,
    project,
    operator,
    operator_client,
    no_tasks,
    django_capture_on_commit_callbacks,
):
    fake.add("p-1", "working")
    run = make_run("p-1")
    fake.cancel_failure = refused
    url = f"/api/execution/runs/{run.pk}/cancel"

    with django_capture_on_commit_callbacks(execute=True):
        first = operator_client.post(url)
    services.cancel_external_run(run.pk)
    with django_capture_on_commit_callbacks(execute=True):
        again = operator_client.post(url)

    assert first.status_code == again.status_code == 200
    assert first.json()["cancelConfirmed"] is False
    body = again.json()
    assert (body["status"], body["cancelConfirmed"]) == ("canceling", False)
    assert "cancel rejected" in body["cancelError"]
    assert len(no_tasks) == 2  # the repeated call sent the cancel again
    fake.cancel_failure = None
    services.cancel_external_run(run.pk)
    assert Run.objects.get(pk=run.pk).status in ("canceling", "canceled")
    assert len(fake.cancels()) == 2
