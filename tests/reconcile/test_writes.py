"""Batched result writes are compare-and-swaps on status and lease."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from execution.models import Run
from execution.reconcile.claims import LeasedWrite, write_leased

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
