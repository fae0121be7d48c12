"""The reconciler: one owner for a worker id, a pool of threads and its sweeps,
and the entry points everyone else calls.

``Reconciler`` keeps its ``WorkerPool`` for its lifetime (``manage.py
reconcile --loop`` keeps one per process); each ``sweep`` builds a ``Sweep``
over that pool. ``close`` waits for calls still in flight and stores their
results.

Entry points: ``reconcile_sweep`` (one sweep), ``reconcile_all_due`` (every
run due when it starts: ``manage.py reconcile``), ``scheduled_sweep`` (the
django-q2 schedule's task) and ``reconcile_run`` (manual refresh: the API and
the admin).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from connectors.registry import LOCAL_PROVIDER_ID
from execution import metrics
from execution.events import audit
from execution.models import Run
from execution.reconcile.apply import ResultWriter
from execution.reconcile.breaker import Breaker
from execution.reconcile.claims import new_worker_id, release
from execution.reconcile.heartbeat import fail_lost_local_runs
from execution.reconcile.pool import WorkerPool
from execution.reconcile.sweep import Sweep
from execution.reconcile.types import ClaimFilter, Limits, PollResult, SweepReport
from execution.states import ACTIVE_STATUSES, RunStatus

SCHEDULE_NAME = "ccdash-reconcile"
# The dotted path stored in the django-q2 schedule row (migration 0003): the
# stable facade module, so existing rows keep working.
SCHEDULED_TASK = "execution.reconciler.scheduled_sweep"
# A call in flight longer than this no longer counts toward the global
# concurrency (EXECUTION["RECONCILE_STUCK_AFTER_S"] overrides it).
STUCK_AFTER_S = 1.0
# Batches one sweep may claim back to back when they come back full (a backlog).
BACKLOG_BATCHES = 10


class Reconciler:
    """A reconciler worker: a worker id, a thread pool and its sweeps.

    ``close()`` (or ``with``) finishes the calls still in flight, stores their
    results and stops the threads.

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
        total = max(1, int(concurrency or conf["RECONCILE_CONCURRENCY"]))
        self.limits = Limits(
            batch_size=int(batch_size or conf["RECONCILE_BATCH_SIZE"]),
            concurrency=total,
            provider_concurrency=max(
                1, min(int(provider_concurrency or conf["PROVIDER_CONCURRENCY"]), total)
            ),
            stuck_after_s=float(conf.get("RECONCILE_STUCK_AFTER_S", STUCK_AFTER_S)),
            inline=inline,
        )
        self.pool = WorkerPool(
            self.limits.concurrency + self.limits.provider_concurrency,
            stuck_after_s=self.limits.stuck_after_s,
            inline=inline,
        )

    @property
    def batch_size(self) -> int:
        return self.limits.batch_size

    def __enter__(self) -> Reconciler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the calls still in flight, store their results, stop the pool."""
        try:
            results = [r for r in self.pool.wait_idle() if isinstance(r, PollResult)]
            if results:
                self._store_late(results)
        finally:
            self.pool.shutdown()

    def _store_late(self, results: list[PollResult]) -> None:
        """Results of calls that outlived their sweep (loop mode)."""
        report = SweepReport(worker_id=self.worker_id)
        counts: Counter[metrics.CounterKey] = Counter()
        breaker = Breaker(int(settings.EXECUTION["CIRCUIT_FAILURE_THRESHOLD"]))
        for result in results:
            breaker.record_shared(result)
        writer = ResultWriter(self.worker_id, report, counts)
        try:
            writer.write(results)
            writer.mark_configs_failing()
            metrics.record_sweep(counts, duration_s=0.0, ended_at=timezone.now(), sweep=False)
        finally:
            release(self.worker_id, [r.target.run_id for r in results])

    def sweep(
        self,
        *,
        provider_id: str | None = None,
        run_ids: Sequence[int] | None = None,
        stop_event: threading.Event | None = None,
        force: bool = False,
        wait_for_stuck: bool = True,
        max_batches: int | None = 1,
        due_before: datetime | None = None,
    ) -> SweepReport:
        """Reconcile a batch of due runs.

        ``provider_id``/``run_ids`` narrow the batch; ``force`` ignores
        ``next_reconcile_at`` (manual refresh); ``due_before`` counts only the
        runs due by then. ``max_batches`` > 1 claims the next batch while the
        previous one drains (as long as batches come back full), so a backlog
        is worked through without the pool idling between sweeps; ``None``
        claims until a batch comes back short. With ``wait_for_stuck=False``
        the sweep returns once only stuck calls remain (the next sweep or
        ``close()`` stores them), and runs queued behind a provider whose whole
        share is stuck are rescheduled. When ``stop_event`` is set the sweep
        starts nothing more, lets the calls in flight finish and stores them,
        and releases the claims it has not processed.
        """
        sweep = Sweep(
            self.worker_id,
            self.pool,
            self.limits,
            stop_event or threading.Event(),
            wait_for_stuck=wait_for_stuck,
            claim_filter=ClaimFilter(provider_id, run_ids, force, due_before),
            max_batches=max_batches,
        )
        return sweep.run()


# --- entry points --------------------------------------------------------------------


def reconcile_sweep(
    provider_id: str | None = None,
    run_ids: Iterable[int] | None = None,
    stop_event: threading.Event | None = None,
    *,
    force: bool = False,
    batch_size: int | None = None,
) -> SweepReport:
    """One sweep (one batch) with a fresh worker (pool closed afterwards)."""
    with Reconciler(batch_size=batch_size) as reconciler:
        return reconciler.sweep(
            provider_id=provider_id,
            run_ids=list(run_ids) if run_ids is not None else None,
            stop_event=stop_event,
            force=force,
        )


def reconcile_all_due(
    reconciler: Reconciler,
    *,
    provider_id: str | None = None,
    stop_event: threading.Event | None = None,
) -> SweepReport:
    """Every run that is due when this starts, however many batches that
    takes: batches are claimed until one comes back short. Runs this very
    sweep reschedules (a failed poll, a dispatch retry) are due after the
    start, so they are not claimed twice."""
    return reconciler.sweep(
        provider_id=provider_id,
        stop_event=stop_event,
        max_batches=None,
        due_before=timezone.now(),
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
        first_dispatch_pending = (
            run.status == RunStatus.QUEUED and not run.provider_run_id and not run.next_reconcile_at
        )
        if not first_dispatch_pending:
            with Reconciler(batch_size=1, concurrency=1, inline=True) as reconciler:
                reconciler.sweep(run_ids=[run.pk], force=True)
    run.refresh_from_db()
    return run
