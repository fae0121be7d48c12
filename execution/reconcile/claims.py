"""Which runs are due, and how a reconciler worker claims them.

A claim is a lease on the run row: ``lease_owner`` (the worker id) and
``lease_expires_at``. Only the lease holder polls a run and writes its result;
the write that stores the result clears the lease in the same UPDATE. A worker
that dies leaves leases that expire after ``RECONCILE_LEASE_S`` and are taken
over by the next sweep.

Claiming is race-free on both databases:

* PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED`` inside one transaction picks
  rows no other worker is claiming at that instant, then the lease is written
  before the transaction commits. Concurrent workers get disjoint batches
  without waiting on each other.
* SQLite (``skip_locked`` is silently ignored there): candidates are read
  without a lock, then leased with a compare-and-swap UPDATE that repeats the
  "due and lease free" condition; the rows carrying our exact lease are read
  back. SQLite serialises writers, so two workers can never both win a row; a
  worker that lost every candidate to another one tries the next ones.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.db.models.functions import Cast

from connectors.registry import LOCAL_PROVIDER_ID
from execution.models import Run
from execution.states import ACTIVE_STATUSES, RunStatus

# A SQLite worker that lost its candidates to another worker retries this often.
CAS_ROUNDS = 3


def new_worker_id() -> str:
    """``host:pid:random`` — unique per reconciler instance, readable in the DB."""
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def active_external() -> Q:
    return Q(status__in=ACTIVE_STATUSES) & ~Q(provider_id=LOCAL_PROVIDER_ID)


def due(now: datetime) -> Q:
    """External runs in an active status whose next reconcile time has come.

    Includes queued runs without a provider run id whose dispatch failed
    transiently (``next_reconcile_at`` set by dispatch): they are retried.
    """
    return active_external() & Q(next_reconcile_at__lte=now)


def lease_free(now: datetime) -> Q:
    return Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)


def _candidates(
    now: datetime,
    provider_id: str | None,
    run_ids: Sequence[int] | None,
    force: bool,
    exclude_providers: Iterable[str] = (),
    due_by: datetime | None = None,
) -> QuerySet:
    condition = active_external() if force else due(due_by or now)
    qs = Run.objects.filter(condition & lease_free(now))
    if provider_id:
        qs = qs.filter(provider_id=provider_id)
    excluded = list(exclude_providers)
    if excluded:
        qs = qs.exclude(provider_id__in=excluded)
    if run_ids is not None:
        qs = qs.filter(pk__in=list(run_ids))
    return qs.order_by("next_reconcile_at", "pk")


def _select_candidates(qs: QuerySet, limit: int) -> list[int]:
    """Ids of up to ``limit`` candidates (a seam tests use to force races)."""
    return list(qs.values_list("pk", flat=True)[:limit])


def claim(
    worker_id: str,
    *,
    now: datetime,
    limit: int,
    lease_s: float,
    provider_id: str | None = None,
    run_ids: Sequence[int] | None = None,
    force: bool = False,
    exclude_providers: Iterable[str] = (),
    due_by: datetime | None = None,
) -> list[int]:
    """Lease up to ``limit`` due runs to ``worker_id``; returns their ids,
    oldest due first.

    ``force`` ignores ``next_reconcile_at`` (manual refresh of ``run_ids``).
    ``exclude_providers`` leaves those providers' runs due for later (the
    sweep passes providers whose every call is hanging). ``due_by`` counts
    only runs due by then (default ``now``); leases are always from ``now``.
    Leases that expired are taken over. Never blocks on rows another worker
    is claiming.
    """
    if limit <= 0:
        return []
    expires = now + timedelta(seconds=lease_s)
    if connection.features.has_select_for_update_skip_locked:
        with transaction.atomic():
            qs = _candidates(now, provider_id, run_ids, force, exclude_providers, due_by)
            qs = qs.select_for_update(skip_locked=True)
            ids = _select_candidates(qs, limit)
            if ids:
                Run.objects.filter(pk__in=ids).update(
                    lease_owner=worker_id, lease_expires_at=expires
                )
        return ids
    claimed: list[int] = []
    for _ in range(CAS_ROUNDS):
        qs = _candidates(now, provider_id, run_ids, force, exclude_providers, due_by)
        ids = _select_candidates(qs.exclude(pk__in=claimed), limit - len(claimed))
        if not ids:
            break
        condition = (active_external() if force else due(due_by or now)) & lease_free(now)
        won = Run.objects.filter(condition, pk__in=ids).update(
            lease_owner=worker_id, lease_expires_at=expires
        )
        if won == len(ids):  # uncontested: every candidate is ours
            claimed.extend(ids)
            break
        if won:
            ours = set(
                Run.objects.filter(
                    pk__in=ids, lease_owner=worker_id, lease_expires_at=expires
                ).values_list("pk", flat=True)
            )
            claimed.extend(pk for pk in ids if pk in ours)  # keeps the oldest-due order
        if len(claimed) >= limit:
            break
    return claimed


def renew(worker_id: str, run_ids: Iterable[int], *, now: datetime, lease_s: float) -> int:
    """Extend our leases on ``run_ids`` (a long sweep keeps what it holds)."""
    ids = list(run_ids)
    if not ids:
        return 0
    return Run.objects.filter(pk__in=ids, lease_owner=worker_id).update(
        lease_expires_at=now + timedelta(seconds=lease_s)
    )


def release(worker_id: str, run_ids: Iterable[int]) -> int:
    """Give back leases we still hold (stop requested, or a write lost its
    compare-and-swap); the runs stay due for the next worker."""
    ids = list(run_ids)
    if not ids:
        return 0
    return Run.objects.filter(pk__in=ids, lease_owner=worker_id).update(
        lease_owner="", lease_expires_at=None
    )


def postpone(worker_id: str, run_ids: Iterable[int], *, until: datetime) -> int:
    """Give back leases of runs not polled now: they fall due at ``until``."""
    ids = list(run_ids)
    if not ids:
        return 0
    return Run.objects.filter(pk__in=ids, lease_owner=worker_id).update(
        lease_owner="", lease_expires_at=None, next_reconcile_at=until
    )


def release_all(worker_id: str) -> int:
    """Every lease of this worker (shutdown safety net)."""
    return Run.objects.filter(lease_owner=worker_id).update(lease_owner="", lease_expires_at=None)


def lost_local_runs(now: datetime, grace_s: float, run_ids: Sequence[int] | None = None):
    """Local runs whose worker stopped beating more than ``grace_s`` ago."""
    cutoff = now - timedelta(seconds=grace_s)
    qs = Run.objects.filter(
        provider_id=LOCAL_PROVIDER_ID, status__in=(RunStatus.RUNNING, RunStatus.CANCELING)
    ).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff),
    )
    if run_ids is not None:
        qs = qs.filter(pk__in=list(run_ids))
    return qs


@dataclass(frozen=True)
class LeasedWrite:
    """Fields to store on a run we hold the lease of, if it is still in
    ``expected_status`` (nobody moved it meanwhile)."""

    pk: int
    expected_status: str
    fields: Mapping[str, Any]


# Rows per UPDATE when the database has no parameter limit (PostgreSQL).
MAX_ROWS_PER_UPDATE = 1000


def write_leased(worker_id: str, writes: Sequence[LeasedWrite]) -> int:
    """Store many results with few UPDATEs; returns how many rows were written.

    Each UPDATE is a compare-and-swap on ``status`` and ``lease_owner``: a row
    another writer moved (a user's cancel) or whose lease expired and was
    taken over is left alone, and our lease on it, if any, is released. Rows
    are grouped by expected status and written field set; a field with the
    same value for the whole chunk (the common case: every in-sync run gets
    the same sync fields) is a plain ``SET``, the others a ``CASE`` on the pk.
    Callers wrap this in a transaction and put ``lease_owner``/
    ``lease_expires_at`` in ``fields`` to clear the lease in the same UPDATE.
    """
    groups: dict[tuple[str, frozenset[str]], list[LeasedWrite]] = defaultdict(list)
    for status_and_names, members in _by_field_set(writes).items():
        # Rows writing the very same values (runs of one provider that did not
        # change) share a plain UPDATE: a CASE costs far more to build than to run.
        by_values: dict[tuple, list[LeasedWrite]] = defaultdict(list)
        for write in members:
            by_values[_values_key(write.fields)].append(write)
        rest = []
        for same in by_values.values():
            if len(same) >= MIN_UNIFORM_ROWS:
                groups[(*status_and_names, len(groups))] = same
            else:
                rest += same
        if rest:
            groups[(*status_and_names, len(groups))] = rest
    written = 0
    for (status, names, _), members in groups.items():
        varying = {n for n in names if any(m.fields[n] != members[0].fields[n] for m in members)}
        for chunk in _chunks(members, _rows_per_update(len(names), len(varying))):
            pks = [m.pk for m in chunk]
            updates = {name: _column(name, chunk) for name in names}
            count = Run.objects.filter(pk__in=pks, status=status, lease_owner=worker_id).update(
                **updates
            )
            if count < len(pks):
                release(worker_id, pks)
            written += count
    return written


# Rows with identical values get an UPDATE of their own from this many on.
MIN_UNIFORM_ROWS = 20


def _by_field_set(writes: Sequence[LeasedWrite]) -> dict[tuple[str, frozenset[str]], list]:
    grouped: dict[tuple[str, frozenset[str]], list[LeasedWrite]] = defaultdict(list)
    for write in writes:
        grouped[(write.expected_status, frozenset(write.fields))].append(write)
    return grouped


def _values_key(fields: Mapping[str, Any]) -> tuple:
    return tuple(
        sorted(
            (name, json.dumps(value, sort_keys=True, default=str)) for name, value in fields.items()
        )
    )


def _rows_per_update(fields: int, varying: int) -> int:
    limit = connection.features.max_query_params
    if not limit:
        return MAX_ROWS_PER_UPDATE
    # Per row: its pk in the IN list, plus (pk, value) in each CASE.
    budget = limit - fields - 4
    return max(1, min(MAX_ROWS_PER_UPDATE, budget // (1 + 2 * varying)))


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _column(name: str, chunk: Sequence[LeasedWrite]) -> Any:
    first = chunk[0].fields[name]
    if all(w.fields[name] == first for w in chunk):
        return first
    field = Run._meta.get_field(name)
    expression = Case(
        *[When(pk=w.pk, then=Value(w.fields[name], output_field=field)) for w in chunk],
        default=F(name),
        output_field=field,
    )
    if connection.features.requires_casted_case_in_updates:
        expression = Cast(expression, output_field=field)
    return expression
