"""Provider output arrives incrementally with a cursor; no line is stored twice (§6)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from connectors.errors import TransientError
from connectors.models import ProviderConfig, ProviderCredential
from execution.models import Run, RunEvent
from execution.reconcile.pool import Lane
from execution.reconcile.types import Target
from execution.reconciler import reconcile_sweep
from tests.reconcile.conftest import make_due

pytestmark = pytest.mark.django_db


def output_lines(run) -> list[str]:
    return list(
        RunEvent.objects.filter(run=run, event_type="output")
        .order_by("sequence_no")
        .values_list("text", flat=True)
    )


def test_logs_are_stored_once_across_many_polls(fake, make_run, settings):
    settings.EXECUTION = {**settings.EXECUTION, "RECONCILE_LOG_INTERVAL_S": 0.0}
    fake.add("p-1", "working", logs=["one", "two"])
    run = make_run("p-1")

    for new_line in ("three", None, "four", None):
        reconcile_sweep()
        if new_line:
            fake.runs["p-1"].logs.append(new_line)
        make_due(run)
    reconcile_sweep()

    assert output_lines(run) == ["one", "two", "three", "four"]
    run.refresh_from_db()
    assert run.log_cursor == {"offset": 4}
    assert run.provider_state == {}  # the adapter's own data, untouched by the engine


def test_logs_come_with_every_status_change_and_a_final_fetch(fake, make_run):
    fake.add("p-1", "working", "working", "done", logs=["booting"])
    run = make_run("p-1", status="queued")

    reconcile_sweep()  # queued → running: fetched
    fake.runs["p-1"].logs.append("working hard")
    make_due(run)
    reconcile_sweep()  # unchanged, within the log interval: not fetched
    fake.runs["p-1"].logs.append("finished")
    make_due(run)
    reconcile_sweep()  # → succeeded: final fetch

    assert len(fake.fetches()) == 2
    assert output_lines(run) == ["booting", "working hard", "finished"]
    kinds = list(
        RunEvent.objects.filter(run=run)
        .order_by("sequence_no")
        .values_list("event_type", flat=True)
    )
    # Output first, then the status change it led to.
    assert kinds[-2:] == ["output", "status_changed"]


def test_unchanged_runs_fetch_logs_no_more_often_than_the_interval(fake, make_run):
    fake.add("p-1", "working", logs=["a"])
    run = make_run("p-1", logs_fetched_at=timezone.now() - timedelta(seconds=11))

    reconcile_sweep()
    make_due(run)
    reconcile_sweep()

    assert len(fake.fetches()) == 1
    run.refresh_from_db()
    assert abs((timezone.now() - run.logs_fetched_at).total_seconds()) < 5


def test_a_failed_log_fetch_does_not_fail_the_status_update(fake, make_run):
    fake.add("p-1", "done", logs=["x"])
    run = make_run("p-1")
    fake.log_failure = lambda: TransientError("logs endpoint down", status_code=502)

    reconcile_sweep()

    run.refresh_from_db()
    assert (run.status, run.sync_status) == ("succeeded", "in_sync")
    assert output_lines(run) == []


def test_logs_are_scrubbed_of_the_projects_credentials(fake, make_run, project):
    config = ProviderConfig.objects.create(project=project, provider_id="fake", enabled=True)
    credential = ProviderCredential(config=config)
    credential.values = {"apiKey": "sk-live-abcdef123456"}
    credential.save()
    fake.add("p-1", "done", logs=["using key sk-live-abcdef123456 now"])
    run = make_run("p-1")

    reconcile_sweep()

    assert output_lines(run) == ["using key [REDACTED] now"]


def test_a_provider_without_log_support_is_never_asked(other, make_run, monkeypatch):
    from connectors import registry
    from connectors.base import ProviderAdapter

    monkeypatch.setattr(registry.REGISTRY["other"], "fetch_logs", ProviderAdapter.fetch_logs)
    other.add("o-1", "done")
    run = make_run("o-1", provider_id="other")

    reconcile_sweep()

    assert other.fetches() == []
    assert Run.objects.get(pk=run.pk).status == "succeeded"


def test_output_that_comes_with_the_poll_is_stored_once_without_a_log_fetch(
    fake, make_run, settings
):
    settings.EXECUTION = {**settings.EXECUTION, "RECONCILE_LOG_INTERVAL_S": 0.0}
    fake.logs_with_poll = True
    fake.add("p-1", "working", logs=["hello"])
    run = make_run("p-1")

    reconcile_sweep()
    fake.runs["p-1"].logs.append("world")
    make_due(run)
    reconcile_sweep()
    make_due(run)
    reconcile_sweep()

    assert output_lines(run) == ["hello", "world"]
    # Only the third poll, which brought nothing, fell back to fetch_logs.
    assert len(fake.fetches()) == 1
    assert fake.fetches()[0].at > fake.polls()[2].at


def test_a_lane_hands_out_status_reads_first_and_log_reads_only_when_let():
    def target(pk, **flags):
        return Target(Run(pk=pk), None, ("fake", ""), True, 10.0, **flags)

    lane = Lane("fake", cap=4, group_size=10)
    log_read = target(1, logs_only=True)
    lane.logs.append(log_read)
    alone = [target(2, alone=True), target(3, alone=True)]
    grouped = [target(4), target(5)]
    lane.queue.extend([*alone, *grouped])
    lane.hold_logs = True

    # Queued before the status reads, the log read still comes after them;
    # runs read alone are never grouped, the others are.
    assert lane.take() == [alone[0]]
    assert lane.take() == [alone[1]]
    assert lane.take() == grouped
    # Held while the sweep still reads or stores statuses.
    assert (lane.take(), lane.takeable(), lane.waiting()) == ([], 0, 1)
    lane.hold_logs = False
    assert lane.take() == [log_read]
