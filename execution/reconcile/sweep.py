"""One reconcile sweep, driven from the sweep's own thread.

``Sweep.run`` fails lost local runs (``heartbeat``), claims a batch
(``claims``), puts each run into its provider's ``Lane`` (a ``Target`` to
poll, or a ``DispatchRetry``) — or, for a batch-polled run due before its
slot's next listing (``cadence.ListingSchedule``), gives it back due at that
listing, with a logs-only read when its output is due — then drives: starts lane workers on the
reconciler's ``WorkerPool`` within ``concurrency`` and
``provider_concurrency`` (a call in flight past ``stuck_after_s`` stops
counting toward the global limit), collects their results, keeps the circuit
up to date (its ``Breaker``), stores results every ``FLUSH_INTERVAL_S`` or
``FLUSH_ROWS`` (its ``ResultWriter``), renews its leases, claims a backlog's
next batch while the previous one drains, and gives back every claim it did
not process. It reports in a ``SweepReport``.

The sweep owns its lanes, breaker, writer and the leases it holds; it reads
the pool only through ``WorkerPool``'s methods. ``handle`` is what a lane
worker runs for each group it takes (on a pool thread).
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from connectors import budget
from connectors.base import ProviderAdapter
from connectors.configs import build_adapter
from connectors.errors import ConfigurationError
from connectors.models import ProviderConfig
from connectors.registry import LOCAL_PROVIDER_ID
from execution import cancels, metrics
from execution.models import Run
from execution.reconcile.apply import ResultWriter
from execution.reconcile.breaker import Breaker, Verdict
from execution.reconcile.cadence import Cadence
from execution.reconcile.claims import claim, postpone, release, renew
from execution.reconcile.heartbeat import fail_lost_local_runs
from execution.reconcile.poll import fetch_logs_only, poll_group, run_dispatch_retry
from execution.reconcile.pool import Lane, WorkerPool, is_dispatch
from execution.reconcile.types import (
    ClaimFilter,
    DispatchDone,
    DispatchRetry,
    Limits,
    PollResult,
    Result,
    SweepReport,
    Target,
    WorkItem,
)
from execution.states import RunStatus

# Results are written when this many are waiting, or this long after the
# previous write, so runs of fast providers are stored while slow ones poll.
FLUSH_ROWS = 250
FLUSH_INTERVAL_S = 0.25
# Default for EXECUTION["RECONCILE_LOG_INTERVAL_S"]: fetch logs of a run whose
# status did not change at most this often.
LOG_INTERVAL_S = 10.0


class Sweep:
    """The state of one sweep. Its methods run on the sweep's thread, except
    ``handle`` (lane workers)."""

    def __init__(
        self,
        worker_id: str,
        pool: WorkerPool,
        limits: Limits,
        stop_event: threading.Event,
        *,
        wait_for_stuck: bool = True,
        claim_filter: ClaimFilter | None = None,
        max_batches: int | None = 1,
    ):
        conf = settings.EXECUTION
        self.worker_id = worker_id
        self.pool = pool
        self.limits = limits
        self.claim_filter = claim_filter or ClaimFilter()
        # None: as many batches as come back full.
        self.batches_left = None if max_batches is None else max(1, max_batches)
        self.more_due = False
        self.stop_event = stop_event
        self.wait_for_stuck = wait_for_stuck
        self.finished = False
        self.report = SweepReport(worker_id=worker_id)
        self.lease_s = float(conf["RECONCILE_LEASE_S"])
        self.log_interval_s = float(conf.get("RECONCILE_LOG_INTERVAL_S", LOG_INTERVAL_S))
        self.cadence = Cadence(float(conf["RECONCILE_INTERVAL_S"]))
        self.breaker = Breaker(int(conf["CIRCUIT_FAILURE_THRESHOLD"]))
        self.counts: Counter[metrics.CounterKey] = Counter()
        self.writer = ResultWriter(worker_id, self.report, self.counts)
        # Leases to renew and, at the end, give back (calls still in flight excepted).
        self.held: set[int] = pool.in_flight_ids()
        self.pending: list[PollResult] = []
        self.lanes: dict[str, Lane] = {}
        self.started = time.monotonic()
        self.started_at = timezone.now()

    # --- the sweep ---------------------------------------------------------

    def run(self) -> SweepReport:
        """Take every step, then release what is left (see the module doc)."""
        try:
            wanted = self.claim_filter
            if wanted.provider_id in (None, LOCAL_PROVIDER_ID):
                self.report.worker_lost = fail_lost_local_runs(timezone.now(), wanted.run_ids)
                self.counts[(metrics.WORKER_LOST, LOCAL_PROVIDER_ID, "")] += self.report.worker_lost
            # What other reconcilers learnt about request budgets, and what we did.
            budget.sync()
            self._claim_batch(first=True)
            if self.held or self.pool.has_results() or self._queued():
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
        finally:
            self.finished = True
            self._release_leftovers()

    def _claim_batch(self, *, first: bool = False) -> None:
        wanted = self.claim_filter
        now = timezone.now()
        ids = claim(
            self.worker_id,
            now=now,
            due_by=wanted.due_before,
            limit=self.limits.batch_size,
            lease_s=self.lease_s,
            provider_id=wanted.provider_id,
            run_ids=wanted.run_ids,
            force=wanted.force,
            # Claiming runs we could only skip would cost every other
            # provider's runs time; they stay due until calls get through.
            exclude_providers=() if wanted.run_ids is not None else self._hanging_providers(),
        )
        if self.batches_left is not None:
            self.batches_left -= 1
        self.report.batches += 1
        self.more_due = len(ids) == self.limits.batch_size
        self.held.update(ids)
        self.report.claimed += len(ids)
        self.counts[(metrics.CLAIMED, "", "")] += len(ids)
        if ids:
            self._enqueue(ids, now, first=first)

    def _enqueue(self, ids: list[int], now: datetime, *, first: bool) -> None:
        runs = {run.pk: run for run in Run.objects.filter(pk__in=ids, lease_owner=self.worker_id)}
        if first:
            due_times = [r.next_reconcile_at for r in runs.values() if r.next_reconcile_at]
            oldest = min(due_times, default=None)
            self.report.lag_s = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
        adapters = _AdapterCache()
        endpoints: set[tuple[str, str]] = set()
        # Batch-polled runs due before their slot's next listing: they wait for it.
        joining: dict[datetime, list[int]] = {}
        # Runs of batch-polled adapters, per provider: their listings go first.
        listed: dict[str, list[Target]] = {}
        # Not when asked for particular runs, nor by the one-shot command (every
        # run due when it started is polled).
        wanted = self.claim_filter
        may_join = not wanted.force and wanted.run_ids is None and wanted.due_before is None
        for pk in ids:
            run = runs.get(pk)
            if run is None:
                continue
            if not run.provider_run_id:  # queued, or canceled while dispatching
                self._lane(run.provider_id).queue.append(
                    DispatchRetry(self.worker_id, pk, run.provider_id, not self.limits.inline)
                )
                continue
            try:
                adapter = adapters.get(run.project_id, run.provider_id)
            except ConfigurationError as exc:  # provider no longer registered
                bare = Target(run, None, (run.provider_id, ""), False, 0.0)
                self.pending.append(PollResult(bare, error=exc))
                continue
            endpoint = (adapter.provider_id, adapter.base_url)
            endpoints.add(endpoint)
            target = Target(
                run,
                adapter,
                endpoint,
                adapter.capabilities().supports_logs,
                self.log_interval_s,
                send_cancel=cancels.to_send(run, now),
            )
            paced = self.cadence.log_interval_s(target, self.log_interval_s)
            if paced > self.log_interval_s:
                # The budget limits: running output (not an ended run's last
                # lines) only at the paced interval, within the token's allowance.
                if not (_log_due(run, paced, now) and self.cadence.running_output_allowed(target)):
                    paced = math.inf
                target = replace(target, log_interval_s=paced, logs_on_change=False)
            lane = self._lane(run.provider_id)
            listing_at = may_join and self.cadence.joins_listing(target, now, self.started_at)
            if listing_at:
                joining.setdefault(listing_at, []).append(pk)
                if _running_output_due(target, now):
                    # e.g. a job ended (webhook): its lines now, the status at the listing.
                    lane.logs.append(replace(target, logs_only=True))
                continue
            if adapter.capabilities().supports_batch_poll:
                # One listing answers for many runs: a worker takes them together,
                # ahead of the reads already queued, which keep the lane's other
                # workers busy meanwhile (behind them, the workers would run out
                # of work while it lists, and wait for the runs it leaves out).
                lane.group_size = max(lane.group_size, self.limits.batch_size)
                listed.setdefault(run.provider_id, []).append(target)
                continue
            lane.queue.append(target)
        for provider_id, targets in listed.items():
            self.lanes[provider_id].put_back(targets)
        for listing_at, waiting in joining.items():
            postpone(self.worker_id, waiting, until=listing_at)
            self.held.difference_update(waiting)
        self.breaker.load(endpoints)

    def _lane(self, provider_id: str) -> Lane:
        if provider_id not in self.lanes:
            self.lanes[provider_id] = Lane(provider_id, cap=self.limits.provider_concurrency)
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
            self._consume(self.pool.results(timeout=FLUSH_INTERVAL_S))
            if self._running_low():
                self._claim_batch()  # overlaps with the calls still in flight
            now_m = time.monotonic()
            reading = self._reading_status()
            if (
                len(self.pending) >= FLUSH_ROWS
                or now_m - last_flush >= FLUSH_INTERVAL_S
                or self._logs_wait_for_flush(reading)
            ):
                self._flush()
                last_flush = now_m
            self._hold_logs(reading)
            if now_m - last_renew >= self.lease_s / 3:
                renew(self.worker_id, self.held, now=timezone.now(), lease_s=self.lease_s)
                last_renew = now_m
            if self._done():
                return

    def _queued(self) -> bool:
        """Work waits in a lane (a logs-only read of a run not held)."""
        return any(lane.waiting() for lane in self.lanes.values())

    def _reading_status(self) -> set[str]:
        """Providers whose status reads of this sweep are not all done: some
        queued (unless the provider's whole share is stuck) or in flight (not
        stuck). Every provider while answers wait to be collected."""
        if self.pool.has_results():
            return set(self.lanes)
        census = self.pool.census()
        reading = {provider_id for provider_id, n in census.reading.items() if n}
        for lane in self.lanes.values():
            if lane.queue and census.stuck[lane.provider_id] < lane.cap:
                reading.add(lane.provider_id)
        return reading

    def _unstored(self) -> set[str]:
        """Providers with status results read but not stored yet."""
        return {r.target.run.provider_id for r in self.pending if not r.target.logs_only}

    def _logs_wait_for_flush(self, reading: set[str]) -> bool:
        """A lane's status reads are done, its log reads wait, and only storing
        its results holds them: store now rather than at the next interval."""
        unstored = self._unstored()
        return any(
            lane.logs and p in unstored and p not in reading for p, lane in self.lanes.items()
        )

    def _hold_logs(self, reading: set[str]) -> None:
        """Status first: a lane's log reads wait until its status reads are done
        and their results stored, so they compete neither with the status
        reads for the provider's workers nor with the writes that store them."""
        waiting_on = reading | self._unstored()
        for provider_id, lane in self.lanes.items():
            lane.hold_logs = provider_id in waiting_on

    def _hanging_providers(self) -> list[str]:
        """Providers whose whole share of calls has been in flight past the
        stuck threshold (calls of an earlier sweep included, in loop mode)."""
        stuck = self.pool.census().stuck
        return [p for p, n in stuck.items() if n >= self.limits.provider_concurrency]

    def _running_low(self) -> bool:
        """Time to claim the next batch: fewer than half a batch (at least
        ``concurrency``) queued, so the claim overlaps with the polls instead
        of following them. Runs queued behind a provider whose whole share is
        stuck do not count: they would hold everyone else's next batch back
        until those calls time out."""
        if not self.more_due or self.stop_event.is_set():
            return False
        if self.batches_left is not None and self.batches_left <= 0:
            return False
        stuck = self.pool.census().stuck
        queued = sum(
            len(lane.queue) for lane in self.lanes.values() if stuck[lane.provider_id] < lane.cap
        )
        return queued < max(self.limits.concurrency, self.limits.batch_size // 2)

    def _start_workers(self) -> None:
        """Round-robin over the lanes, one worker each per turn, while fewer than
        ``concurrency`` are working and the provider is under its cap."""
        census = self.pool.census()
        working = census.working
        per_provider = census.per_provider
        # Workers that have not taken an item yet: each will take one. A
        # worker busy with a call does not shorten the queue.
        waiting = census.waiting
        concurrency = self.limits.concurrency
        started = True
        while started and working < concurrency:
            started = False
            for lane in self.lanes.values():
                if working >= concurrency:
                    return
                if per_provider[lane.provider_id] >= lane.cap or waiting[id(lane)] >= (
                    lane.takeable()
                ):
                    continue
                self.pool.start(lane, self.handle, self._workers_stop)
                working += 1
                per_provider[lane.provider_id] += 1
                waiting[id(lane)] += 1
                started = True

    def _workers_stop(self) -> bool:
        return self.stop_event.is_set() or self.finished

    def handle(self, group: list[WorkItem]) -> list[Result]:
        """Lane worker (pool thread): a dispatch retry, or a group of runs of
        one endpoint polled through the breaker."""
        if is_dispatch(group):
            item = group[0]
            assert isinstance(item, DispatchRetry)
            return [run_dispatch_retry(item)]
        if len(group) == 1 and isinstance(group[0], Target) and group[0].logs_only:
            return [fetch_logs_only(group[0])]
        results: list[Result] = []
        calls: list[Target] = []
        probe = False
        for target in group:
            assert isinstance(target, Target)
            admission = self.breaker.admit(target)
            if admission.verdict is Verdict.SKIP:
                results.append(
                    PollResult(target, skipped=admission.reason, retry_after=admission.retry_after)
                )
            elif admission.verdict is not Verdict.DEFER:
                probe = probe or admission.verdict is Verdict.PROBE
                calls.append(target)
        alone: list[WorkItem] = []
        for index, result in enumerate(poll_group(calls)):
            released = self.breaker.record(result, probe=probe and index == 0)
            if released:
                # Back to the lane: polled now, or skipped there if the probe failed.
                self.lanes[result.target.run.provider_id].put_back(list(released))
            if result.unlisted:
                alone.append(replace(result.target, alone=True))
                continue
            if result.logs_due:
                # Status first: the lines are read when no status read waits.
                follow = replace(result.target, logs_only=True)
                self.lanes[result.target.run.provider_id].logs.append(follow)
            results.append(result)
        if alone:
            # Left out of the listing (ended, say): read one by one by the lane's
            # workers side by side, first of the status reads.
            self.lanes[alone[0].run.provider_id].put_back(alone)
        return results

    def _consume(self, results: list[Result]) -> None:
        for item in results:
            if isinstance(item, PollResult):
                self.breaker.record_shared(item)
                self.pending.append(item)
            elif isinstance(item, DispatchDone):
                self.held.discard(item.item.run_id)
                if item.outcome in ("dispatched", "recovered"):
                    self.report.dispatched += 1
                self.counts[(metrics.DISPATCH_RETRIES, item.item.provider_id, "")] += 1

    def _done(self) -> bool:
        if self.pool.has_results():
            return False
        census = self.pool.census()
        if self.stop_event.is_set():
            return not census.total  # finish what is in flight
        queued = any(lane.waiting() for lane in self.lanes.values())
        if self.wait_for_stuck:
            return not census.total and not queued
        if self._skip_behind_stuck(census.stuck):
            queued = any(lane.waiting() for lane in self.lanes.values())
        if not queued and self._running_low():
            return False  # more runs are due: the next turn claims them
        return not queued and census.working == 0

    def _skip_behind_stuck(self, stuck: Counter[str]) -> bool:
        """Loop mode: runs queued behind a provider whose whole share is stuck
        are rescheduled (transient) instead of holding the sweep open."""
        skipped = False
        for provider_id, lane in self.lanes.items():
            if not lane.waiting() or stuck[provider_id] < lane.cap:
                continue
            reason = (
                f"provider not answering: {stuck[provider_id]} calls in flight for more "
                f"than {self.limits.stuck_after_s:g}s"
            )
            for item in lane.drain():
                if isinstance(item, DispatchRetry):
                    self.report.released += release(self.worker_id, [item.run_id])
                    self.held.discard(item.run_id)
                elif item.logs_only:
                    continue  # its status is stored; the lines come with a later poll
                else:
                    self.pending.append(
                        PollResult(item, skipped=reason, skip_kind="provider_hanging")
                    )
            skipped = True
        return skipped

    def _release_queued(self) -> None:
        ids = [item.run_id for lane in self.lanes.values() for item in lane.drain()]
        ids += [target.run_id for target in self.breaker.take_deferred()]
        if ids:
            self.report.released += release(self.worker_id, ids)
            self.held.difference_update(ids)

    def _release_leftovers(self) -> None:
        """Whatever is still held (stop, or an error mid-sweep) goes back,
        except the runs whose calls are still in flight."""
        leftovers = self.held - self.pool.in_flight_ids()
        if leftovers:
            self.report.released += release(self.worker_id, leftovers)
        self.held.clear()

    def _flush(self) -> None:
        results, self.pending = self.pending, []
        if not results:
            return
        self.writer.write(results)
        self.held.difference_update(r.target.run.pk for r in results)
        self.writer.mark_configs_failing()


def _log_due(run: Run, interval_s: float, now: datetime) -> bool:
    """Whether the run's output was last read ``interval_s`` ago or more."""
    last = run.logs_fetched_at or run.last_reconciled_at or run.created_at
    return last is None or (now - last).total_seconds() >= interval_s


def _running_output_due(target: Target, now: datetime) -> bool:
    """A running run's output is due by its log interval (a run waits for
    its listing: nothing to read while queued, and an ended run's last
    lines come with the status that ends it)."""
    run = target.run
    return (
        target.fetch_logs
        and run.status == RunStatus.RUNNING
        and _log_due(run, target.log_interval_s, now)
    )


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
