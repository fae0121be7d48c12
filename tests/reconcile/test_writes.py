"""Batched result writes (unchanged runs, and runs that all changed status) are
compare-and-swaps on status and lease."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from execution.events import NewEvent, append_events
from execution.models import Run, RunEvent, Stream
from execution.reconcile.claims import LeasedWrite, write_leased
from execution.transitions import InvalidTransition, Move, transition, transition_many

pytestmark = pytest.mark.django_db

CLEAR = {"lease_owner": "", "lease_expires_at": None}


def leased(make_run, n, owner="w-1", **fields):
    return [
        make_run(
            f"p-{i}",
            lease_owner=owner,
            lease_expires_at=timezone.now() + timedelta(seconds=60),
            **fields,
        )
        for i in range(n)
    ]


def test_same_values_are_one_update_and_clear_the_lease(make_run, django_assert_num_queries):
    runs = leased(make_run, 30)
    writes = [LeasedWrite(r.pk, "running", {"sync_status": "in_sync", **CLEAR}) for r in runs]

    with django_assert_num_queries(1):
        assert write_leased("w-1", writes) == 30

    assert Run.objects.filter(lease_owner="", sync_status="in_sync").count() == 30


def test_values_that_differ_per_run_are_written_per_run(make_run):
    runs = leased(make_run, 3)
    writes = [
        LeasedWrite(r.pk, "running", {"log_cursor": {"offset": i}, **CLEAR})
        for i, r in enumerate(runs)
    ]

    with transaction.atomic():
        write_leased("w-1", writes)

    for i, run in enumerate(runs):
        run.refresh_from_db()
        assert run.log_cursor == {"offset": i}


def test_a_run_whose_status_moved_is_not_written_and_its_lease_is_released(make_run):
    moved, kept = leased(make_run, 2)
    Run.objects.filter(pk=moved.pk).update(status="canceling")

    written = write_leased(
        "w-1",
        [
            LeasedWrite(r.pk, "running", {"provider_status_raw": "x", **CLEAR})
            for r in (moved, kept)
        ],
    )

    assert written == 1
    moved.refresh_from_db()
    assert (moved.status, moved.provider_status_raw, moved.lease_owner) == ("canceling", "", "")


def test_a_run_leased_to_someone_else_is_not_written(make_run):
    (theirs,) = leased(make_run, 1, owner="w-2")

    assert write_leased("w-1", [LeasedWrite(theirs.pk, "running", {"sync_status": "error"})]) == 0
    theirs.refresh_from_db()
    assert (theirs.sync_status, theirs.lease_owner) == ("in_sync", "w-2")


def test_large_batches_stay_within_the_databases_parameter_limit(make_run):
    runs = leased(make_run, 1200 if connection.features.max_query_params else 50)
    now = timezone.now()
    writes = [
        LeasedWrite(r.pk, "running", {"next_reconcile_at": now + timedelta(seconds=i), **CLEAR})
        for i, r in enumerate(runs)
    ]

    with transaction.atomic():
        assert write_leased("w-1", writes) == len(runs)


# --- many runs changing status at once (runs that ended together) -----------------


def ended(run, **fields):
    return Move(run, "succeeded", "provider_status", "it ended", {**CLEAR, **fields})


def test_many_transitions_cost_a_few_statements_not_five_per_run(
    make_run, django_assert_max_num_queries
):
    runs = leased(make_run, 40)
    for run in runs[:10]:
        append_events(run.pk, [NewEvent(Stream.SYSTEM, "earlier", text="before")])

    # Savepoints included; the same for 4 runs or 4,000.
    with django_assert_max_num_queries(10):
        applied = transition_many([ended(r) for r in runs], lease_owner="w-1")

    assert len(applied) == 40
    for run in runs:
        stored = Run.objects.get(pk=run.pk)
        assert (stored.status, stored.lease_owner, stored.next_reconcile_at) == (
            "succeeded",
            "",
            None,
        )
        assert stored.ended_at is not None and run.status == "succeeded"
        events = list(RunEvent.objects.filter(run=run).order_by("sequence_no"))
        # After the run's own events, gap-free, with what transition() writes.
        assert [e.sequence_no for e in events] == list(range(1, len(events) + 1))
        last = events[-1]
        assert (last.event_type, last.text) == ("status_changed", "running → succeeded: it ended")
        assert last.payload == {"from": "running", "to": "succeeded", "reason": "provider_status"}


def test_transition_many_writes_what_transition_writes(make_run):
    one, many = leased(make_run, 2)
    fields = {**CLEAR, "provider_status_raw": "completed/success", "exit_code": 0}

    transition(Run.objects.get(pk=one.pk), "succeeded", reason="provider_status", **fields)
    transition_many([Move(many, "succeeded", "provider_status", "", fields)], lease_owner="w-1")

    columns = ("status", "status_reason", "lease_owner", "provider_status_raw", "exit_code")
    a, b = (Run.objects.values(*columns).get(pk=r.pk) for r in (one, many))
    assert a == b


def test_a_run_moved_meanwhile_or_leased_elsewhere_is_left_alone(make_run):
    moved, theirs, mine = leased(make_run, 3)
    Run.objects.filter(pk=moved.pk).update(status="canceling")
    Run.objects.filter(pk=theirs.pk).update(lease_owner="w-2")

    applied = transition_many([ended(r) for r in (moved, theirs, mine)], lease_owner="w-1")

    assert [m.run.pk for m in applied] == [mine.pk]
    statuses = dict(Run.objects.values_list("pk", "status"))
    assert statuses == {moved.pk: "canceling", theirs.pk: "running", mine.pk: "succeeded"}
    assert not RunEvent.objects.filter(run_id__in=[moved.pk, theirs.pk]).exists()


def test_a_forbidden_move_raises_before_anything_is_written(make_run):
    good, over = leased(make_run, 2)
    Run.objects.filter(pk=over.pk).update(status="failed")
    over.refresh_from_db()

    with pytest.raises(InvalidTransition):
        transition_many([ended(good), Move(over, "running")], lease_owner="w-1")

    assert Run.objects.get(pk=good.pk).status == "running"


def test_many_events_stay_within_the_databases_parameter_limit(make_run):
    runs = leased(make_run, 1200 if connection.features.max_query_params else 50)

    with transaction.atomic():
        applied = transition_many([ended(r) for r in runs], lease_owner="w-1")

    assert len(applied) == len(runs)
    assert RunEvent.objects.filter(event_type="status_changed").count() == len(runs)
