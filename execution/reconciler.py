"""Reconciliation: keep every active external run in step with its provider.

A sweep (``Reconciler.sweep``) does, in order:

1. fail local runs whose worker stopped beating (``worker_lost``);
2. claim a batch of due external runs with a lease (``reconcile_claims``);
3. poll them from a thread pool: one queue ("lane") per provider, worked by
   threads that take their next run themselves; at most
   ``RECONCILE_CONCURRENCY`` threads working and ``PROVIDER_CONCURRENCY`` per
   provider, so a hanging provider only ever occupies its own share; per-call
   timeouts come from ``connectors.http``; a circuit breaker per provider
   endpoint (the shared one in the database, plus an in-process view so a
   sweep stops calling an endpoint once it has failed repeatedly);
4. store the answers on the sweep's own thread as they come in: unchanged
   runs in a few batched compare-and-swap UPDATEs, runs whose status changed
   (or that brought log lines) one by one through ``transition()``; each write
   clears the lease. No transaction is open while an HTTP call is in flight,
   and the pool threads never touch the database (except dispatch retries,
   which reuse the dispatch pipeline).

A provider that cannot be reached never ends a run: the run keeps its status,
is polled with exponential backoff, and turns ``stale`` after
``STALE_AFTER_S``. Unusable answers (unknown status, run not found, rejected
credential) turn it ``error`` and it is polled every
``RECONCILE_ERROR_INTERVAL_S``.

Where each part lives:

* this module: ``Reconciler`` (worker id, thread pool, which threads are
  working) and the entry points below; it re-exports ``SweepReport`` and
  ``fail_lost_local_runs``, so every caller imports from here;
* ``execution.reconcile_sweep``: one sweep, driven from its own thread (the
  steps in order, starting lane workers within the limits, renewing and
  releasing leases), ``SweepReport`` and ``fail_lost_local_runs`` (step 1);
* ``execution.reconcile_claims``: which runs are due and the leases (step 2);
* ``execution.reconcile_lanes``: the pool-thread side of step 3 (the poll,
  dispatch retries, lanes and lane workers) and the in-process circuit view;
* ``execution.reconcile_apply``: step 4, what each answer means and how it is
  written (statuses, errors and backoff, ``stale``, log lines);
* ``execution.backoff``: the retry delays.

Entry points: ``reconcile_sweep`` (one sweep), ``scheduled_sweep`` (the
django-q2 schedule's task), ``reconcile_run`` (manual refresh: the API and
the admin), and ``manage.py reconcile`` (once, or ``--loop``).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.utils import timezone

from connectors.registry import LOCAL_PROVIDER_ID
from execution.events import audit
from execution.models import Run
from execution.reconcile_claims import new_worker_id
from execution.reconcile_lanes import LaneWorker
from execution.reconcile_sweep import ClaimFilter, Sweep, SweepReport, fail_lost_local_runs
from execution.states import ACTIVE_STATUSES, RunStatus

__all__ = [
    "BACKLOG_BATCHES",
    "SCHEDULED_TASK",
    "SCHEDULE_NAME",
    "STUCK_AFTER_S",
    "Reconciler",
    "SweepReport",
    "fail_lost_local_runs",
    "reconcile_run",
    "reconcile_sweep",
    "scheduled_sweep",
]

SCHEDULE_NAME = "ccdash-reconcile"
SCHEDULED_TASK = "execution.reconciler.scheduled_sweep"
# A call in flight longer than this no longer counts toward the global
# concurrency (EXECUTION["RECONCILE_STUCK_AFTER_S"] overrides it).
STUCK_AFTER_S = 1.0
# Batches one sweep may claim back to back when they come back full (a backlog).
BACKLOG_BATCHES = 10


class Reconciler:
    """A reconciler worker: a worker id, a thread pool and the sweep logic.

    Use one per process (``manage.py reconcile --loop`` keeps one for its
    lifetime); ``close()`` (or ``with``) finishes the calls still in flight,
    stores their results and stops the threads.

    Concurrency: at most ``concurrency`` threads are *working* at once (as
    many as plain polling at that concurrency would use) and at most
    ``provider_concurrency`` per provider. A call in flight for longer than
    ``RECONCILE_STUCK_AFTER_S`` no longer counts toward the global limit, only
    toward its provider's cap: a hanging provider keeps its share of threads
    (the pool has room for one provider's full share on top) and everyone else
    keeps the full concurrency. In loop mode (``wait_for_stuck=False``) stuck
    calls outlive the sweep and the next sweep stores their results, so a
    hanging provider holds up no sweep either.
    """

    def __init__(
        self,
        *,
        worker_id: str | None = None,
        batch_size: int | None = None,
        concurrency: int | None = None,
        provider_concurrency: int | None = None,
        inline: bool = False,
    ):
        conf = settings.EXECUTION
        self.worker_id = worker_id or new_worker_id()
        self.batch_size = int(batch_size or conf["RECONCILE_BATCH_SIZE"])
        self.concurrency = max(1, int(concurrency or conf["RECONCILE_CONCURRENCY"]))
        self.provider_concurrency = max(
            1, min(int(provider_concurrency or conf["PROVIDER_CONCURRENCY"]), self.concurrency)
        )
        self.stuck_after_s = float(conf.get("RECONCILE_STUCK_AFTER_S", STUCK_AFTER_S))
        # inline: poll on the calling thread (manual refresh of one run).
        self.inline = inline
        self.lock = threading.Lock()
        self.workers: list[LaneWorker] = []
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Reconciler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the calls still in flight, store their results, stop the pool."""
        try:
            if self.workers or not self.results.empty():
                Sweep(self, threading.Event()).drain()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def in_flight_ids(self) -> set[int]:
        with self.lock:
            ids = {w.current_run_id for w in self.workers}
        ids.discard(None)
        return ids  # type: ignore[return-value]

    def start(self, worker: LaneWorker) -> None:
        with self.lock:
            self.workers.append(worker)
        if self.inline:
            worker.run()
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.concurrency + self.provider_concurrency, thread_name_prefix="reconcile"
            )
        self._pool.submit(worker.run)

    def sweep(
        self,
        *,
        provider_id: str | None = None,
        run_ids: Sequence[int] | None = None,
        stop_event: threading.Event | None = None,
        force: bool = False,
        wait_for_stuck: bool = True,
        max_batches: int = 1,
    ) -> SweepReport:
        """Reconcile a batch of due runs (see the module docstring).

        ``provider_id``/``run_ids`` narrow the batch; ``force`` ignores
        ``next_reconcile_at`` (manual refresh). ``max_batches`` > 1 claims the
        next batch while the previous one drains (as long as batches come back
        full), so a backlog is worked through without the pool idling between
        sweeps. With ``wait_for_stuck=False``
        the sweep returns once only stuck calls remain (the next sweep or
        ``close()`` stores them), and runs queued behind a provider whose whole
        share is stuck are rescheduled. When ``stop_event`` is set the sweep
        starts nothing more, lets the calls in flight finish and stores them,
        and releases the claims it has not processed.
        """
        sweep = Sweep(
            self,
            stop_event or threading.Event(),
            wait_for_stuck=wait_for_stuck,
            claim_filter=ClaimFilter(provider_id, run_ids, force),
            max_batches=max_batches,
        )
        try:
            return sweep.run()
        finally:
            sweep.finished = True
            sweep.release_leftovers()


# --- entry points --------------------------------------------------------------------


def reconcile_sweep(
    provider_id: str | None = None,
    run_ids: Iterable[int] | None = None,
    stop_event: threading.Event | None = None,
    *,
    force: bool = False,
    batch_size: int | None = None,
) -> SweepReport:
    """One sweep with a fresh worker (pool closed afterwards)."""
    with Reconciler(batch_size=batch_size) as reconciler:
        return reconciler.sweep(
            provider_id=provider_id,
            run_ids=list(run_ids) if run_ids is not None else None,
            stop_event=stop_event,
            force=force,
        )


def scheduled_sweep(max_seconds: float = 45.0) -> str:
    """The django-q2 schedule's task: sweep, and keep sweeping while batches
    come back full (a backlog), for at most ``max_seconds`` — the scheduler
    fires again a minute later."""
    deadline = time.monotonic() + max_seconds
    reports: list[SweepReport] = []
    with Reconciler() as reconciler:
        while True:
            report = reconciler.sweep(max_batches=BACKLOG_BATCHES)
            reports.append(report)
            full = report.claimed >= reconciler.batch_size * BACKLOG_BATCHES
            if not full or time.monotonic() >= deadline:
                break
    claimed = sum(r.claimed for r in reports)
    changed = sum(r.changed for r in reports)
    errors = sum(r.error_count for r in reports)
    return f"{len(reports)} sweep(s): claimed={claimed} changed={changed} errors={errors}"


def reconcile_run(run_id: int, *, actor: str = "system") -> Run:
    """Manual refresh: poll one run now, whatever its ``next_reconcile_at``.

    Records a ``reconcile_requested`` audit event with ``actor``. A local run
    gets the heartbeat check only; a terminal run is returned as it is; a
    queued run whose dispatch failed is dispatched again; a run another worker
    is reconciling at this moment is left to it. Returns the run as stored
    afterwards. Raises ``Run.DoesNotExist``.
    """
    run = Run.objects.get(pk=run_id)
    audit(run.pk, "reconcile_requested", f"Reconcile requested by {actor}", actor=actor)
    if run.provider_id == LOCAL_PROVIDER_ID:
        fail_lost_local_runs(timezone.now(), [run.pk])
    elif run.status in ACTIVE_STATUSES:
        if (
            run.status == RunStatus.QUEUED
            and not run.provider_run_id
            and not (run.next_reconcile_at)
        ):
            pass  # its first dispatch is still on its way
        else:
            with Reconciler(batch_size=1, concurrency=1, inline=True) as reconciler:
                reconciler.sweep(run_ids=[run.pk], force=True)
    run.refresh_from_db()
    return run
