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

Entry points: ``reconcile_sweep`` (one sweep), ``scheduled_sweep`` (the
django-q2 schedule's task), ``reconcile_run`` (manual refresh: the API and
the admin), and ``manage.py reconcile`` (once, or ``--loop``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from connectors import circuit
from connectors.base import TERMINAL, LogEntry, ProviderAdapter, RunRef, RunState
from connectors.configs import build_adapter, project_redactor
from connectors.errors import (
    AuthError,
    ConfigurationError,
    ConnectorError,
    RateLimited,
    TransientError,
)
from connectors.models import HealthStatus, ProviderCircuit, ProviderConfig
from connectors.redaction import Redactor
from connectors.registry import LOCAL_PROVIDER_ID
from execution import metrics
from execution.backoff import reconcile_backoff
from execution.events import NewEvent, append_events, audit
from execution.models import Run, Stream
from execution.reconcile_claims import (
    LeasedWrite,
    claim,
    lost_local_runs,
    new_worker_id,
    release,
    renew,
    write_leased,
)
from execution.states import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    RunStatus,
    SyncStatus,
    outcome_of_cancel,
)
from execution.transitions import InvalidTransition, transition

logger = logging.getLogger(__name__)

SCHEDULE_NAME = "ccdash-reconcile"
SCHEDULED_TASK = "execution.reconciler.scheduled_sweep"
# A call in flight longer than this no longer counts toward the global
# concurrency (EXECUTION["RECONCILE_STUCK_AFTER_S"] overrides it).
STUCK_AFTER_S = 1.0
# Results are written when this many are waiting, or this long after the
# previous write, so runs of fast providers are stored while slow ones poll.
FLUSH_ROWS = 250
FLUSH_INTERVAL_S = 0.25
# Default for EXECUTION["RECONCILE_LOG_INTERVAL_S"]: fetch logs of a run whose
# status did not change at most this often.
LOG_INTERVAL_S = 10.0
MAX_ERROR_CHARS = 2000
# Batches one sweep may claim back to back when they come back full (a backlog).
BACKLOG_BATCHES = 10
_LEASE_CLEARED = {"lease_owner": "", "lease_expires_at": None}


@dataclass
class SweepReport:
    """What one sweep did. ``errors`` counts failed polls by error kind;
    ``stale`` the runs left stale; ``lag_s`` how late the oldest claimed run was."""

    worker_id: str
    claimed: int = 0
    polled: int = 0
    changed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    stale: int = 0
    dispatched: int = 0
    worker_lost: int = 0
    released: int = 0
    lost_writes: int = 0
    duration_s: float = 0.0
    lag_s: float = 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary_line(self) -> str:
        errors = ",".join(f"{k}:{v}" for k, v in sorted(self.errors.items()))
        return (
            f"claimed={self.claimed} polled={self.polled} changed={self.changed} "
            f"errors={self.error_count}{f' ({errors})' if errors else ''} stale={self.stale} "
            f"dispatched={self.dispatched} worker_lost={self.worker_lost} "
            f"released={self.released} duration={self.duration_s:.2f}s lag={self.lag_s:.1f}s"
        )


# --- what the pool threads do (no database) ------------------------------------


@dataclass(frozen=True)
class _Target:
    run: Run
    adapter: ProviderAdapter
    endpoint: tuple[str, str]
    fetch_logs: bool
    log_interval_s: float

    @property
    def ref(self) -> RunRef:
        run = self.run
        return RunRef(run.pk, run.provider_run_id, run.dispatch_key, dict(run.provider_state))


@dataclass
class _Result:
    target: _Target
    state: RunState | None = None
    error: BaseException | None = None
    skipped: str = ""  # why it was not polled (circuit open, provider hanging)
    skip_kind: str = "circuit_open"
    retry_after: float | None = None
    entries: list[LogEntry] = field(default_factory=list)
    log_cursor: dict[str, Any] | None = None
    logs_fetched_at: float | None = None
    log_error: BaseException | None = None


def _poll(target: _Target) -> _Result:
    """Ask the provider (pool thread). Never raises."""
    result = _Result(target)
    ref = target.ref
    try:
        state = target.adapter.poll_status(ref)
    except Exception as exc:  # ConnectorError, or an adapter bug: both stay on this run
        if not isinstance(exc, ConnectorError | ConfigurationError):
            logger.exception("poll of run %s raised", target.run.pk)
        result.error = exc
        return result
    result.state = state
    cursor = dict(ref.provider_state.get("logCursor") or {})
    if state.logs is not None:
        # The poll brought the output (Devin): that was this poll's log fetch.
        result.entries.extend(state.logs.entries)
        result.log_cursor = dict(state.logs.cursor)
        result.logs_fetched_at = time.time()
    elif target.fetch_logs and _logs_wanted(target, state):
        try:
            batch = target.adapter.fetch_logs(ref, cursor)
        except Exception as exc:  # the status update must not depend on the logs
            if not isinstance(exc, ConnectorError):
                logger.exception("fetch_logs of run %s raised", target.run.pk)
            result.log_error = exc
        else:
            result.entries.extend(batch.entries)
            result.log_cursor = dict(batch.cursor)
            result.logs_fetched_at = time.time()
    return result


def _logs_wanted(target: _Target, state: RunState) -> bool:
    """On every status change, at the end (final fetch), else every N seconds."""
    run = target.run
    if state.status in TRANSITIONS.get(run.status, frozenset()) or state.status in TERMINAL:
        return True
    last = run.provider_state.get("logsFetchedAt")
    if last is None and run.last_reconciled_at is not None:
        last = run.last_reconciled_at.timestamp()
    return time.time() - float(last or 0.0) >= target.log_interval_s


def _adapter_fetches_logs(adapter: ProviderAdapter) -> bool:
    # The base class's fetch_logs returns nothing: skip the call for such adapters.
    return type(adapter).fetch_logs is not ProviderAdapter.fetch_logs


# --- scheduling: per-provider lanes worked by self-scheduling threads -------------


@dataclass
class _Endpoint:
    """In-process circuit view of one provider endpoint for this sweep. Lane
    workers read and update it under the reconciler's lock."""

    provider_id: str
    base_url: str
    open_reason: str = ""
    retry_after: float | None = None
    half_open: bool = False  # the shared circuit's open period ended: probe first
    probe_in_flight: bool = False
    deferred: list[_Target] = field(default_factory=list)
    consecutive_failures: int = 0
    shared_failures: int = 0  # main thread only: as last known in the database


@dataclass
class _Lane:
    """One provider's runs to poll in this sweep (``deque`` pops are thread-safe)."""

    provider_id: str
    cap: int
    queue: deque = field(default_factory=deque)


@dataclass(frozen=True)
class _ClaimFilter:
    provider_id: str | None = None
    run_ids: Sequence[int] | None = None
    force: bool = False


@dataclass(frozen=True)
class _DispatchDone:
    item: _DispatchRetry
    outcome: str


_WORKER_EXITED = object()  # wakes the sweep's thread up


class _LaneWorker:
    """Works through one lane in a pool thread: takes the next run, asks the
    provider, hands the result to the sweep's thread, and goes on until the
    lane is empty or the sweep ends. The sweep's thread only starts workers and
    writes results, so a slow database write never leaves a thread idle."""

    def __init__(self, sweep: _Sweep, lane: _Lane):
        self.sweep = sweep
        self.lane = lane
        self.provider_id = lane.provider_id
        self.current: _Target | _DispatchRetry | None = None
        self.call_started: float | None = None

    @property
    def current_run_id(self) -> int | None:
        item = self.current
        if item is None:
            return None
        return item.run_id if isinstance(item, _DispatchRetry) else item.run.pk

    def stuck(self, now_m: float) -> bool:
        started = self.call_started
        return started is not None and now_m - started >= self.sweep.r.stuck_after_s

    def run(self) -> None:
        r = self.sweep.r
        try:
            while not (self.sweep.stop_event.is_set() or self.sweep.finished):
                try:
                    self.current = self.lane.queue.popleft()
                except IndexError:
                    break
                outcome = self._handle(self.current)
                if outcome is not None:
                    r.results.put(outcome)
                self.current = None
        finally:
            with r.lock:
                r.workers.remove(self)
            r.results.put(_WORKER_EXITED)

    def _handle(self, item: _Target | _DispatchRetry) -> _Result | _DispatchDone | None:
        if isinstance(item, _DispatchRetry):
            self.call_started = time.monotonic()
            try:
                return _DispatchDone(item, item())
            finally:
                self.call_started = None
        sweep = self.sweep
        endpoint = sweep.endpoints[item.endpoint]
        with sweep.r.lock:
            if endpoint.open_reason:
                return _Result(item, skipped=endpoint.open_reason, retry_after=endpoint.retry_after)
            probe = endpoint.half_open
            if probe:
                if endpoint.probe_in_flight:
                    endpoint.deferred.append(item)  # until the probe has answered
                    return None
                endpoint.probe_in_flight = True
        self.call_started = time.monotonic()
        try:
            result = _poll(item)
        finally:
            self.call_started = None
        sweep.note_outcome(endpoint, result, probe)
        return result


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
        self.workers: list[_LaneWorker] = []
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
                _Sweep(self, threading.Event()).drain()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def in_flight_ids(self) -> set[int]:
        with self.lock:
            ids = {w.current_run_id for w in self.workers}
        ids.discard(None)
        return ids  # type: ignore[return-value]

    def start(self, worker: _LaneWorker) -> None:
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
        sweep = _Sweep(
            self,
            stop_event or threading.Event(),
            wait_for_stuck=wait_for_stuck,
            claim_filter=_ClaimFilter(provider_id, run_ids, force),
            max_batches=max_batches,
        )
        try:
            return sweep.run()
        finally:
            sweep.finished = True
            sweep.release_leftovers()


class _Sweep:
    """The state of one sweep. Its methods run on the sweep's thread, except
    ``note_outcome`` (lane workers, under the lock)."""

    def __init__(
        self,
        reconciler: Reconciler,
        stop_event: threading.Event,
        *,
        wait_for_stuck: bool = True,
        claim_filter: _ClaimFilter | None = None,
        max_batches: int = 1,
    ):
        conf = settings.EXECUTION
        self.r = reconciler
        self.claim_filter = claim_filter or _ClaimFilter()
        self.batches_left = max(1, max_batches)
        self.more_due = False
        self.stop_event = stop_event
        self.wait_for_stuck = wait_for_stuck
        self.finished = False
        self.worker_id = reconciler.worker_id
        self.report = SweepReport(worker_id=self.worker_id)
        self.interval_s = float(conf["RECONCILE_INTERVAL_S"])
        self.error_interval_s = float(conf["RECONCILE_ERROR_INTERVAL_S"])
        self.stale_after_s = float(conf["STALE_AFTER_S"])
        self.lease_s = float(conf["RECONCILE_LEASE_S"])
        self.log_interval_s = float(conf.get("RECONCILE_LOG_INTERVAL_S", LOG_INTERVAL_S))
        self.breaker_threshold = int(conf["CIRCUIT_FAILURE_THRESHOLD"])
        # Leases to renew and, at the end, give back (calls still in flight excepted).
        self.held: set[int] = reconciler.in_flight_ids()
        self.pending: list[_Result] = []
        self.counts: Counter[metrics.CounterKey] = Counter()
        self.endpoints: dict[tuple[str, str], _Endpoint] = {}
        self.circuits_loaded: set[tuple[str, str]] = set()
        self.lanes: dict[str, _Lane] = {}
        self.redactors: dict[int, Redactor] = {}
        self.failing_configs: dict[tuple[int, str], str] = {}
        self.started = time.monotonic()

    # --- the sweep ---------------------------------------------------------

    def run(self) -> SweepReport:
        wanted = self.claim_filter
        now = timezone.now()
        if wanted.provider_id in (None, LOCAL_PROVIDER_ID):
            self.report.worker_lost = fail_lost_local_runs(now, wanted.run_ids)
            self.counts[(metrics.WORKER_LOST, LOCAL_PROVIDER_ID, "")] += self.report.worker_lost
        self._claim_batch(first=True)
        if self.held or not self.r.results.empty():
            self._drive()
            self._flush()
        self.report.duration_s = time.monotonic() - self.started
        metrics.record_sweep(
            self.counts,
            duration_s=self.report.duration_s,
            ended_at=timezone.now(),
            sweep=not wanted.force,  # a manual refresh is not a sweep
        )
        return self.report

    def _claim_batch(self, *, first: bool = False) -> None:
        wanted = self.claim_filter
        now = timezone.now()
        ids = claim(
            self.worker_id,
            now=now,
            limit=self.r.batch_size,
            lease_s=self.lease_s,
            provider_id=wanted.provider_id,
            run_ids=wanted.run_ids,
            force=wanted.force,
        )
        self.batches_left -= 1
        self.more_due = len(ids) == self.r.batch_size
        self.held.update(ids)
        self.report.claimed += len(ids)
        self.counts[(metrics.CLAIMED, "", "")] += len(ids)
        if ids:
            self._enqueue(ids, now, first=first)

    def drain(self) -> None:
        """Store every call still in flight (``Reconciler.close``)."""
        try:
            self._drive()
            self._flush()
            metrics.record_sweep(self.counts, duration_s=0.0, ended_at=timezone.now(), sweep=False)
        finally:
            self.finished = True
            self.release_leftovers()

    def _enqueue(self, ids: list[int], now: datetime, *, first: bool) -> None:
        runs = {run.pk: run for run in Run.objects.filter(pk__in=ids, lease_owner=self.worker_id)}
        if first:
            due_times = [r.next_reconcile_at for r in runs.values() if r.next_reconcile_at]
            oldest = min(due_times, default=None)
            self.report.lag_s = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
        adapters = _AdapterCache()
        for pk in ids:
            run = runs.get(pk)
            if run is None:
                continue
            if run.status == RunStatus.QUEUED and not run.provider_run_id:
                self._lane(run.provider_id).queue.append(
                    _DispatchRetry(self.worker_id, pk, run.provider_id, not self.r.inline)
                )
                continue
            try:
                adapter = adapters.get(run.project_id, run.provider_id)
            except ConfigurationError as exc:  # provider no longer registered
                self.pending.append(_Result(self._bare_target(run), error=exc))
                continue
            endpoint = self._endpoint((adapter.provider_id, adapter.base_url))
            target = _Target(
                run,
                adapter,
                (endpoint.provider_id, endpoint.base_url),
                _adapter_fetches_logs(adapter),
                self.log_interval_s,
            )
            self._lane(run.provider_id).queue.append(target)
        self._load_circuits()

    def _lane(self, provider_id: str) -> _Lane:
        if provider_id not in self.lanes:
            self.lanes[provider_id] = _Lane(provider_id, cap=self.r.provider_concurrency)
        return self.lanes[provider_id]

    def _drive(self) -> None:
        """Start lane workers within the limits and store results as they come,
        until nothing is left (in loop mode: until only stuck calls are)."""
        last_flush = last_renew = time.monotonic()
        while True:
            if self.stop_event.is_set():
                self._release_queued()
            else:
                self._start_workers()
            self._consume(timeout=FLUSH_INTERVAL_S)
            if self._running_low():
                self._claim_batch()  # overlaps with the calls still in flight
            now_m = time.monotonic()
            if len(self.pending) >= FLUSH_ROWS or now_m - last_flush >= FLUSH_INTERVAL_S:
                self._flush()
                last_flush = now_m
            if now_m - last_renew >= self.lease_s / 3:
                renew(self.worker_id, self.held, now=timezone.now(), lease_s=self.lease_s)
                last_renew = now_m
            if self._done(now_m):
                return

    def _running_low(self) -> bool:
        if not self.more_due or self.batches_left <= 0 or self.stop_event.is_set():
            return False
        return sum(len(lane.queue) for lane in self.lanes.values()) < self.r.concurrency

    def _start_workers(self) -> None:
        """Round-robin over the lanes, one worker each per turn, while fewer than
        ``concurrency`` are working and the provider is under its cap."""
        r = self.r
        now_m = time.monotonic()
        with r.lock:
            working = sum(1 for w in r.workers if not w.stuck(now_m))
            per_provider = Counter(w.provider_id for w in r.workers)
            per_lane = Counter(id(w.lane) for w in r.workers)
        started = True
        while started and working < r.concurrency:
            started = False
            for lane in self.lanes.values():
                if working >= r.concurrency:
                    return
                if per_provider[lane.provider_id] >= lane.cap or per_lane[id(lane)] >= len(
                    lane.queue
                ):
                    continue
                r.start(_LaneWorker(self, lane))
                working += 1
                per_provider[lane.provider_id] += 1
                per_lane[id(lane)] += 1
                started = True

    def _consume(self, timeout: float) -> None:
        try:
            item = self.r.results.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            if isinstance(item, _Result):
                self._record_circuit(item)
                self.pending.append(item)
            elif isinstance(item, _DispatchDone):
                self.held.discard(item.item.run_id)
                if item.outcome in ("dispatched", "recovered"):
                    self.report.dispatched += 1
                self.counts[(metrics.DISPATCH_RETRIES, item.item.provider_id, "")] += 1
            try:
                item = self.r.results.get_nowait()
            except queue.Empty:
                return

    def _done(self, now_m: float) -> bool:
        with self.r.lock:
            workers = list(self.r.workers)
        if not self.r.results.empty():
            return False
        if self.stop_event.is_set():
            return not workers  # finish what is in flight
        if not self.wait_for_stuck:
            self._skip_behind_stuck(now_m, workers)
            queued = any(lane.queue for lane in self.lanes.values())
            return not queued and all(w.stuck(now_m) for w in workers)
        return not workers and not any(lane.queue for lane in self.lanes.values())

    def _skip_behind_stuck(self, now_m: float, workers: list[_LaneWorker]) -> None:
        """Loop mode: runs queued behind a provider whose whole share is stuck
        are rescheduled (transient) instead of holding the sweep open."""
        stuck = Counter(w.provider_id for w in workers if w.stuck(now_m))
        for provider_id, lane in self.lanes.items():
            if not lane.queue or stuck[provider_id] < lane.cap:
                continue
            reason = (
                f"provider not answering: {stuck[provider_id]} calls in flight for more "
                f"than {self.r.stuck_after_s:g}s"
            )
            for item in _drain(lane.queue):
                if isinstance(item, _DispatchRetry):
                    self.report.released += release(self.worker_id, [item.run_id])
                    self.held.discard(item.run_id)
                else:
                    self.pending.append(_Result(item, skipped=reason, skip_kind="provider_hanging"))

    def _release_queued(self) -> None:
        ids: list[int] = []
        for lane in self.lanes.values():
            for item in _drain(lane.queue):
                ids.append(item.run_id if isinstance(item, _DispatchRetry) else item.run.pk)
        with self.r.lock:
            for endpoint in self.endpoints.values():
                ids.extend(t.run.pk for t in endpoint.deferred)
                endpoint.deferred.clear()
        if ids:
            self.report.released += release(self.worker_id, ids)
            self.held.difference_update(ids)

    def release_leftovers(self) -> None:
        """Whatever is still held (stop, or an error mid-sweep) goes back,
        except the runs whose calls are still in flight."""
        leftovers = self.held - self.r.in_flight_ids()
        if leftovers:
            self.report.released += release(self.worker_id, leftovers)
        self.held.clear()

    # --- circuits ------------------------------------------------------------

    def _endpoint(self, key: tuple[str, str]) -> _Endpoint:
        if key not in self.endpoints:
            self.endpoints[key] = _Endpoint(*key)
        return self.endpoints[key]

    def _load_circuits(self) -> None:
        """The shared circuit state of endpoints this sweep has not seen yet."""
        new = [key for key in self.endpoints if key not in self.circuits_loaded]
        if not new:
            return
        self.circuits_loaded.update(new)
        now = timezone.now()
        providers = {p for p, _ in new}
        for row in ProviderCircuit.objects.filter(provider_id__in=providers):
            key = (row.provider_id, row.base_url)
            endpoint = self.endpoints.get(key)
            if endpoint is None or key not in new:
                continue
            endpoint.shared_failures = row.consecutive_failures
            if row.open_until and row.open_until > now:
                endpoint.open_reason = "circuit open"
                endpoint.retry_after = (row.open_until - now).total_seconds()
            elif row.consecutive_failures >= self.breaker_threshold:
                endpoint.half_open = True

    def note_outcome(self, endpoint: _Endpoint, result: _Result, probe: bool) -> None:
        """Lane worker thread: the in-process breaker. ``threshold`` transient
        failures in a row (or a failed half-open probe) open the endpoint for
        the rest of the sweep; a probe's answer releases the runs it held back."""
        error = result.error
        with self.r.lock:
            if _counts_as_outage(error):
                endpoint.consecutive_failures += 1
                if endpoint.consecutive_failures >= self.breaker_threshold or probe:
                    endpoint.open_reason = "circuit open after repeated failures this sweep"
            elif not isinstance(error, TransientError):
                endpoint.consecutive_failures = 0
            if not probe:
                return
            endpoint.probe_in_flight = False
            endpoint.half_open = False
            deferred, endpoint.deferred = endpoint.deferred, []
            # Back to the lane: polled now, or skipped there if the probe failed.
            self.lanes[endpoint.provider_id].queue.extendleft(reversed(deferred))

    def _record_circuit(self, result: _Result) -> None:
        """Sweep thread: keep the shared (database) circuit up to date."""
        if result.skipped or result.target.adapter is None:
            return
        endpoint = self._endpoint(result.target.endpoint)  # may come from an earlier sweep
        if _counts_as_outage(result.error):
            circuit.record_failure(
                endpoint.provider_id, endpoint.base_url, _error_message(result.error)
            )
            endpoint.shared_failures += 1
        elif not isinstance(result.error, TransientError) and endpoint.shared_failures:
            circuit.record_success(endpoint.provider_id, endpoint.base_url)
            endpoint.shared_failures = 0

    # --- storing results -------------------------------------------------------

    def _flush(self) -> None:
        results, self.pending = self.pending, []
        if not results:
            return
        now = timezone.now()
        bulk: list[LeasedWrite] = []
        one_by_one: list[_Plan] = []
        for result in results:
            plan = self._plan(result, now)
            if plan.new_status or plan.events:
                one_by_one.append(plan)
            else:
                bulk.append(LeasedWrite(plan.run.pk, plan.run.status, plan.fields))
        if bulk:
            with transaction.atomic():
                written = write_leased(self.worker_id, bulk)
            self.report.lost_writes += len(bulk) - written
        for plan in one_by_one:
            self._write_one(plan)
        self.held.difference_update(r.target.run.pk for r in results)
        self._mark_configs_failing()

    def _write_one(self, plan: _Plan) -> None:
        run = plan.run
        with transaction.atomic():
            stored = Run.objects.filter(
                pk=run.pk, status=run.status, lease_owner=self.worker_id
            ).update(**plan.fields)
            if not stored:
                release(self.worker_id, [run.pk])
                self.report.lost_writes += 1
                return
            if plan.events:
                append_events(run.pk, plan.events)
            if plan.new_status:
                try:
                    moved = transition(
                        run,
                        plan.new_status,
                        reason="provider_status",
                        message=plan.message,
                        **plan.transition_fields,
                    )
                except InvalidTransition:  # _plan checked the table; keep it safe anyway
                    moved = False
                if moved:
                    self.report.changed += 1
                    self.counts[(metrics.TRANSITIONS, run.provider_id, plan.new_status)] += 1

    def _plan(self, result: _Result, now: datetime) -> _Plan:
        run = result.target.run
        provider_id = run.provider_id
        plan = _Plan(run, fields=dict(_LEASE_CLEARED))
        if result.skipped:
            plan.fields.update(self._transient(run, now, result.skipped, result.retry_after))
            self._count(provider_id, "skipped", result.skip_kind, plan)
            return plan
        self.report.polled += 1
        if result.error is not None:
            return self._plan_error(result, now, plan)
        state = result.state
        assert state is not None
        redactor = self._redactor(run.project_id)
        raw = state.provider_status_raw[:200]
        if state.status is None:
            plan.fields.update(
                provider_status_raw=raw,
                sync_status=SyncStatus.ERROR,
                last_sync_error=redactor.scrub(f"unknown provider status {raw!r}"),
                sync_failing_since=run.sync_failing_since or now,
                next_reconcile_at=now + timedelta(seconds=self.error_interval_s),
            )
            self._count(provider_id, "unknown_status", "unknown_status", plan)
        else:
            plan.fields.update(
                provider_status_raw=raw,
                sync_status=SyncStatus.IN_SYNC,
                last_sync_error="",
                sync_failing_since=None,
                reconcile_attempts=0,
                last_reconciled_at=now,
                next_reconcile_at=now + timedelta(seconds=self.interval_s),
            )
            self.counts[(metrics.POLLS, provider_id, SyncStatus.IN_SYNC)] += 1
            if state.provider_url and state.provider_url != run.provider_url:
                plan.fields["provider_url"] = state.provider_url[:1000]
            if state.exit_code is not None and state.exit_code != run.exit_code:
                plan.transition_fields["exit_code"] = state.exit_code
            self._plan_status(result.target, state, raw, redactor, plan)
            if plan.transition_fields and not plan.new_status:
                plan.fields.update(plan.transition_fields)
        self._plan_logs(result, redactor, plan)
        return plan

    def _plan_status(
        self, work: _Target, state: RunState, raw: str, redactor: Redactor, plan: _Plan
    ) -> None:
        run, target = work.run, state.status
        if run.status == RunStatus.CANCELING and target in TERMINAL_STATUSES:
            target = outcome_of_cancel(target)
        if target == run.status:
            return
        if target in TRANSITIONS.get(run.status, frozenset()):
            plan.new_status = target
            label = work.adapter.label
            plan.message = redactor.scrub(
                f"{label} reports {raw!r}" + (f": {state.message}" if state.message else "")
            )
            if target in TERMINAL_STATUSES:
                plan.fields["next_reconcile_at"] = None
            return
        if run.status == RunStatus.CANCELING and target in ACTIVE_STATUSES:
            return  # the provider has not honoured the cancel yet: keep waiting
        if raw == run.provider_status_raw:
            return  # already reported when the provider first said so
        logger.warning(
            "run %s: provider %s reports %r (%s), not allowed from %s; status kept",
            run.pk,
            run.provider_id,
            raw,
            target,
            run.status,
        )
        plan.events.append(
            NewEvent(
                Stream.SYSTEM,
                "unexpected_provider_status",
                text=f"Provider reports {raw!r} ({target}), which cannot follow {run.status}; "
                f"the run keeps its status.",
                payload={"status": run.status, "reported": target, "providerStatusRaw": raw},
            )
        )

    def _plan_error(self, result: _Result, now: datetime, plan: _Plan) -> _Plan:
        run = result.target.run
        error = result.error
        assert error is not None
        message = self._redactor(run.project_id).scrub(_error_message(error))
        kind = getattr(error, "kind", "internal")
        if isinstance(error, TransientError):
            plan.fields.update(self._transient(run, now, message, error.retry_after))
            self._count(run.provider_id, "transient", kind, plan)
            return plan
        plan.fields.update(
            sync_status=SyncStatus.ERROR,
            last_sync_error=message[:MAX_ERROR_CHARS],
            sync_failing_since=run.sync_failing_since or now,
            reconcile_attempts=run.reconcile_attempts + 1,
            next_reconcile_at=now + timedelta(seconds=self.error_interval_s),
        )
        if isinstance(error, AuthError):
            self.failing_configs[(run.project_id, run.provider_id)] = message
        self._count(run.provider_id, "error", kind, plan)
        return plan

    def _transient(
        self, run: Run, now: datetime, message: str, retry_after: float | None
    ) -> dict[str, Any]:
        attempts = run.reconcile_attempts + 1
        failing_since = run.sync_failing_since or now
        stale = (now - failing_since).total_seconds() >= self.stale_after_s
        return {
            "reconcile_attempts": attempts,
            "sync_failing_since": failing_since,
            "sync_status": SyncStatus.STALE if stale else run.sync_status,
            "last_sync_error": message[:MAX_ERROR_CHARS],
            "next_reconcile_at": now + timedelta(seconds=reconcile_backoff(attempts, retry_after)),
        }

    def _plan_logs(self, result: _Result, redactor: Redactor, plan: _Plan) -> None:
        run = result.target.run
        if result.log_error is not None:
            kind = getattr(result.log_error, "kind", "internal")
            self.counts[(metrics.ERRORS, run.provider_id, f"logs_{kind}")] += 1
            logger.warning(
                "run %s: fetching logs failed: %s",
                run.pk,
                redactor.scrub(_error_message(result.log_error)),
            )
        if result.log_cursor is None and result.logs_fetched_at is None:
            return
        state = dict(run.provider_state)
        if result.log_cursor is not None:
            state["logCursor"] = result.log_cursor
        if result.logs_fetched_at is not None:
            state["logsFetchedAt"] = round(result.logs_fetched_at, 3)
        plan.fields["provider_state"] = state
        # Log lines first: they were produced before the status change they explain.
        plan.events[:0] = [
            NewEvent(
                entry.stream,
                "output",
                text=redactor.scrub(entry.text),
                payload=redactor.scrub_obj(dict(entry.payload)),
            )
            for entry in result.entries
        ]

    def _count(self, provider_id: str, outcome: str, kind: str, plan: _Plan) -> None:
        self.counts[(metrics.POLLS, provider_id, outcome)] += 1
        self.counts[(metrics.ERRORS, provider_id, kind)] += 1
        self.report.errors[kind] = self.report.errors.get(kind, 0) + 1
        if plan.fields.get("sync_status") == SyncStatus.STALE:
            self.report.stale += 1

    def _mark_configs_failing(self) -> None:
        """A rejected credential is a provider health problem the admin shows."""
        for (project_id, provider_id), message in self.failing_configs.items():
            ProviderConfig.objects.filter(project_id=project_id, provider_id=provider_id).update(
                health_status=HealthStatus.FAILING,
                health_checked_at=timezone.now(),
                health_message=message[:1000],
            )
        self.failing_configs.clear()

    def _redactor(self, project_id: int) -> Redactor:
        if project_id not in self.redactors:
            self.redactors[project_id] = project_redactor(project_id)
        return self.redactors[project_id]

    def _bare_target(self, run: Run) -> _Target:
        return _Target(run, None, (run.provider_id, ""), False, 0.0)  # type: ignore[arg-type]


@dataclass
class _Plan:
    """What to write for one run: ``fields`` in a compare-and-swap UPDATE (with
    the lease cleared), then ``events``, then the transition if any."""

    run: Run
    fields: dict[str, Any]
    new_status: str = ""
    message: str = ""
    transition_fields: dict[str, Any] = field(default_factory=dict)
    events: list[NewEvent] = field(default_factory=list)


def _counts_as_outage(error: BaseException | None) -> bool:
    # Rate limits are not outages: the HTTP gate already holds requests back.
    return isinstance(error, TransientError) and not isinstance(error, RateLimited)


def _drain(items: deque) -> Iterator[Any]:
    while True:
        try:
            yield items.popleft()
        except IndexError:
            return


def _error_message(error: BaseException) -> str:
    if isinstance(error, ConnectorError | ConfigurationError):
        return error.message
    return f"internal error while polling ({type(error).__name__}): {error}"[:500]


class _AdapterCache:
    """One adapter per (project, provider) for the sweep: one config query each."""

    def __init__(self) -> None:
        self._adapters: dict[tuple[int, str], ProviderAdapter] = {}

    def get(self, project_id: int, provider_id: str) -> ProviderAdapter:
        key = (project_id, provider_id)
        if key not in self._adapters:
            config = (
                ProviderConfig.objects.filter(project_id=project_id, provider_id=provider_id)
                .select_related("credential")
                .first()
            )
            self._adapters[key] = build_adapter(provider_id, config)
        return self._adapters[key]


@dataclass(frozen=True)
class _DispatchRetry:
    """A queued run whose dispatch failed transiently: send it again through the
    dispatch pipeline (idempotent: it recovers a run already created)."""

    worker_id: str
    run_id: int
    provider_id: str
    own_thread: bool = True

    def __call__(self) -> str:
        from execution.dispatch import DISPATCH_RETRY_S, dispatch_run

        try:
            # Should dispatch die halfway, the run comes back later, not next sweep.
            Run.objects.filter(pk=self.run_id, lease_owner=self.worker_id).update(
                next_reconcile_at=timezone.now() + timedelta(seconds=DISPATCH_RETRY_S)
            )
            return dispatch_run(self.run_id)
        except Exception:
            logger.exception("dispatch retry of run %s failed", self.run_id)
            return "error"
        finally:
            release(self.worker_id, [self.run_id])
            if self.own_thread:
                connections.close_all()  # this pool thread's own connections


# --- local runs ------------------------------------------------------------------


def fail_lost_local_runs(now: datetime, run_ids: Sequence[int] | None = None) -> int:
    """Fail local runs whose worker stopped beating (``worker_lost``); returns
    how many. The check is repeated under the row lock (the write lock on
    SQLite), so a worker that beats at the last moment keeps its run."""
    grace_s = float(settings.EXECUTION["HEARTBEAT_GRACE_S"])
    failed = 0
    for pk in list(lost_local_runs(now, grace_s, run_ids).values_list("pk", flat=True)[:500]):
        with transaction.atomic():
            run = lost_local_runs(timezone.now(), grace_s, [pk]).select_for_update().first()
            if run is None:
                continue
            last = run.heartbeat_at or run.created_at
            silent_s = (timezone.now() - last).total_seconds()
            worker = run.worker_id or "unknown worker"
            if transition(
                run,
                RunStatus.FAILED,
                reason="worker_lost",
                message=f"worker {worker} stopped beating {silent_s:.0f}s ago "
                f"(grace {grace_s:.0f}s); its process is presumed dead",
            ):
                failed += 1
    return failed


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
