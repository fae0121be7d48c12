"""One reconcile sweep, driven from the sweep's own thread.

``Sweep.run`` takes the steps listed in ``execution.reconciler``: it fails
lost local runs (``fail_lost_local_runs``), claims a batch, puts each run into
its provider's lane (a ``Target`` to poll, or a ``DispatchRetry``), then
``_drive``s: starts lane workers within ``RECONCILE_CONCURRENCY`` and
``PROVIDER_CONCURRENCY`` (a call in flight past ``RECONCILE_STUCK_AFTER_S``
stops counting toward the global limit), collects their results, keeps the
shared circuit up to date (``CircuitView``, from ``reconcile_lanes``), stores
results every ``FLUSH_INTERVAL_S`` or ``FLUSH_ROWS`` (``ResultWriter``, from
``reconcile_apply``), renews its leases, claims a backlog's next batch while
the previous one drains, and gives back every claim it did not process. It
reports in a ``SweepReport``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connectors.base import ProviderAdapter
from connectors.configs import build_adapter
from connectors.errors import ConfigurationError
from connectors.models import ProviderConfig
from connectors.registry import LOCAL_PROVIDER_ID
from execution import metrics
from execution.models import Run
from execution.reconcile_apply import ResultWriter
from execution.reconcile_claims import claim, lost_local_runs, release, renew
from execution.reconcile_lanes import (
    CircuitView,
    DispatchDone,
    DispatchRetry,
    Endpoint,
    Lane,
    LaneWorker,
    PollResult,
    Target,
)
from execution.states import RunStatus
from execution.transitions import transition

if TYPE_CHECKING:
    from execution.reconciler import Reconciler

# Results are written when this many are waiting, or this long after the
# previous write, so runs of fast providers are stored while slow ones poll.
FLUSH_ROWS = 250
FLUSH_INTERVAL_S = 0.25
# Default for EXECUTION["RECONCILE_LOG_INTERVAL_S"]: fetch logs of a run whose
# status did not change at most this often.
LOG_INTERVAL_S = 10.0


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


@dataclass(frozen=True)
class ClaimFilter:
    """Which runs a sweep claims (``Reconciler.sweep``'s arguments)."""

    provider_id: str | None = None
    run_ids: Sequence[int] | None = None
    force: bool = False


class Sweep(CircuitView):
    """The state of one sweep. Its methods run on the sweep's thread, except
    ``note_outcome`` (lane workers, under the lock)."""

    def __init__(
        self,
        reconciler: Reconciler,
        stop_event: threading.Event,
        *,
        wait_for_stuck: bool = True,
        claim_filter: ClaimFilter | None = None,
        max_batches: int = 1,
    ):
        conf = settings.EXECUTION
        self.r = reconciler
        self.claim_filter = claim_filter or ClaimFilter()
        self.batches_left = max(1, max_batches)
        self.more_due = False
        self.stop_event = stop_event
        self.wait_for_stuck = wait_for_stuck
        self.finished = False
        self.worker_id = reconciler.worker_id
        self.report = SweepReport(worker_id=self.worker_id)
        self.lease_s = float(conf["RECONCILE_LEASE_S"])
        self.log_interval_s = float(conf.get("RECONCILE_LOG_INTERVAL_S", LOG_INTERVAL_S))
        self.breaker_threshold = int(conf["CIRCUIT_FAILURE_THRESHOLD"])
        # Leases to renew and, at the end, give back (calls still in flight excepted).
        self.held: set[int] = reconciler.in_flight_ids()
        self.pending: list[PollResult] = []
        self.counts: Counter[metrics.CounterKey] = Counter()
        self.writer = ResultWriter(self.worker_id, self.report, self.counts)
        self.endpoints: dict[tuple[str, str], Endpoint] = {}
        self.circuits_loaded: set[tuple[str, str]] = set()
        self.lanes: dict[str, Lane] = {}
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
            # Claiming runs we could only skip would cost every other
            # provider's runs time; they stay due until calls get through.
            exclude_providers=() if wanted.run_ids is not None else self._hanging_providers(),
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
                    DispatchRetry(self.worker_id, pk, run.provider_id, not self.r.inline)
                )
                continue
            try:
                adapter = adapters.get(run.project_id, run.provider_id)
            except ConfigurationError as exc:  # provider no longer registered
                self.pending.append(PollResult(self._bare_target(run), error=exc))
                continue
            endpoint = self._endpoint((adapter.provider_id, adapter.base_url))
            target = Target(
                run,
                adapter,
                (endpoint.provider_id, endpoint.base_url),
                _adapter_fetches_logs(adapter),
                self.log_interval_s,
            )
            self._lane(run.provider_id).queue.append(target)
        self._load_circuits()

    def _bare_target(self, run: Run) -> Target:
        return Target(run, None, (run.provider_id, ""), False, 0.0)  # type: ignore[arg-type]

    def _lane(self, provider_id: str) -> Lane:
        if provider_id not in self.lanes:
            self.lanes[provider_id] = Lane(provider_id, cap=self.r.provider_concurrency)
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

    def _hanging_providers(self) -> list[str]:
        """Providers whose whole share of calls has been in flight past the
        stuck threshold (calls of an earlier sweep included, in loop mode)."""
        now_m = time.monotonic()
        with self.r.lock:
            stuck = Counter(w.provider_id for w in self.r.workers if w.stuck(now_m))
        return [p for p, n in stuck.items() if n >= self.r.provider_concurrency]

    def _running_low(self) -> bool:
        """Time to claim the next batch: fewer than half a batch (at least
        ``concurrency``) queued, so the claim overlaps with the polls instead
        of following them. Runs queued behind a provider whose whole share is
        stuck do not count: they would hold everyone else's next batch back
        until those calls time out."""
        if not self.more_due or self.batches_left <= 0 or self.stop_event.is_set():
            return False
        now_m = time.monotonic()
        with self.r.lock:
            stuck = Counter(w.provider_id for w in self.r.workers if w.stuck(now_m))
        queued = sum(
            len(lane.queue) for lane in self.lanes.values() if stuck[lane.provider_id] < lane.cap
        )
        return queued < max(self.r.concurrency, self.r.batch_size // 2)

    def _start_workers(self) -> None:
        """Round-robin over the lanes, one worker each per turn, while fewer than
        ``concurrency`` are working and the provider is under its cap."""
        r = self.r
        now_m = time.monotonic()
        with r.lock:
            working = sum(1 for w in r.workers if not w.stuck(now_m))
            per_provider = Counter(w.provider_id for w in r.workers)
            # Workers that have not taken an item yet: each will take one. A
            # worker busy with a call does not shorten the queue.
            per_lane = Counter(id(w.lane) for w in r.workers if w.current is None)
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
                r.start(LaneWorker(self, lane))
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
            if isinstance(item, PollResult):
                self._record_circuit(item)
                self.pending.append(item)
            elif isinstance(item, DispatchDone):
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
            if not queued and self._running_low():
                return False  # more runs are due: the next turn claims them
            return not queued and all(w.stuck(now_m) for w in workers)
        return not workers and not any(lane.queue for lane in self.lanes.values())

    def _skip_behind_stuck(self, now_m: float, workers: list[LaneWorker]) -> None:
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
                if isinstance(item, DispatchRetry):
                    self.report.released += release(self.worker_id, [item.run_id])
                    self.held.discard(item.run_id)
                else:
                    self.pending.append(
                        PollResult(item, skipped=reason, skip_kind="provider_hanging")
                    )

    def _release_queued(self) -> None:
        ids: list[int] = []
        for lane in self.lanes.values():
            for item in _drain(lane.queue):
                ids.append(item.run_id if isinstance(item, DispatchRetry) else item.run.pk)
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

    # --- storing results (execution.reconcile_apply) --------------------------

    def _flush(self) -> None:
        results, self.pending = self.pending, []
        if not results:
            return
        self.writer.write(results)
        self.held.difference_update(r.target.run.pk for r in results)
        self.writer.mark_configs_failing()


def _drain(items: deque) -> Iterator[Any]:
    while True:
        try:
            yield items.popleft()
        except IndexError:
            return


def _adapter_fetches_logs(adapter: ProviderAdapter) -> bool:
    # The base class's fetch_logs returns nothing: skip the call for such adapters.
    return type(adapter).fetch_logs is not ProviderAdapter.fetch_logs


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
