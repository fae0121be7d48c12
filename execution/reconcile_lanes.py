"""The reconciler's pool-thread side: what a sweep polls and who polls it.

* Work items: a ``Target`` (one run, its adapter and endpoint) is polled by
  ``_poll``, which asks the provider for the status and, when due, the logs,
  and returns a ``PollResult``; it never raises and never touches the
  database. A ``DispatchRetry`` (a queued run whose dispatch failed
  transiently) goes through the dispatch pipeline instead, the one pool-thread
  job that writes.
* Lanes: one ``Lane`` (a queue) per provider, worked by ``LaneWorker``s that
  take their next item themselves and hand results to the sweep's thread
  through ``Reconciler.results``. How many workers run, and when, is decided
  by the sweep (``execution.reconcile_sweep``).
* Endpoints: ``Endpoint`` is the sweep's in-process circuit view of one
  provider endpoint, and ``CircuitView`` (mixed into ``Sweep``) loads it from
  the shared circuit, trips it from lane workers (``note_outcome``, under the
  reconciler's lock) and writes outages back to the shared circuit.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import connections
from django.utils import timezone

from connectors import circuit
from connectors.base import TERMINAL, LogEntry, ProviderAdapter, RunRef, RunState
from connectors.errors import ConfigurationError, ConnectorError, RateLimited, TransientError
from connectors.models import ProviderCircuit
from execution.models import Run
from execution.reconcile_claims import release
from execution.states import TRANSITIONS

if TYPE_CHECKING:
    from execution.reconcile_sweep import Sweep
    from execution.reconciler import Reconciler

# The reconciler's one logger, whichever of its modules logs.
logger = logging.getLogger("execution.reconciler")


# --- work items and what a pool thread does with them -------------------------------


@dataclass(frozen=True)
class Target:
    """One run to poll: its adapter, endpoint key and whether logs may be due."""

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
class PollResult:
    """What polling a ``Target`` gave: a state or an error (or why it was
    skipped), plus any log lines and the new log cursor."""

    target: Target
    state: RunState | None = None
    error: BaseException | None = None
    skipped: str = ""  # why it was not polled (circuit open, provider hanging)
    skip_kind: str = "circuit_open"
    retry_after: float | None = None
    entries: list[LogEntry] = field(default_factory=list)
    log_cursor: dict[str, Any] | None = None
    logs_fetched_at: float | None = None
    log_error: BaseException | None = None


def _poll(target: Target) -> PollResult:
    """Ask the provider (pool thread). Never raises."""
    result = PollResult(target)
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
        # Nothing new means nothing to store (and no second request).
        result.entries.extend(state.logs.entries)
        if state.logs.entries or dict(state.logs.cursor) != cursor:
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


def _logs_wanted(target: Target, state: RunState) -> bool:
    """On every status change, at the end (final fetch), else every N seconds."""
    run = target.run
    if state.status in TRANSITIONS.get(run.status, frozenset()) or state.status in TERMINAL:
        return True
    last = run.provider_state.get("logsFetchedAt")
    if last is None and run.last_reconciled_at is not None:
        last = run.last_reconciled_at.timestamp()
    return time.time() - float(last or 0.0) >= target.log_interval_s


def error_message(error: BaseException) -> str:
    """A poll error as text for the run (not yet redacted)."""
    if isinstance(error, ConnectorError | ConfigurationError):
        return error.message
    return f"internal error while polling ({type(error).__name__}): {error}"[:500]


@dataclass(frozen=True)
class DispatchRetry:
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


# --- lanes and the threads that work them ----------------------------------------------


@dataclass
class Lane:
    """One provider's runs to poll in this sweep (``deque`` pops are thread-safe)."""

    provider_id: str
    cap: int
    queue: deque = field(default_factory=deque)


@dataclass(frozen=True)
class DispatchDone:
    """A ``DispatchRetry`` a lane worker has run, with dispatch's outcome."""

    item: DispatchRetry
    outcome: str


_WORKER_EXITED = object()  # wakes the sweep's thread up


class LaneWorker:
    """Works through one lane in a pool thread: takes the next run, asks the
    provider, hands the result to the sweep's thread, and goes on until the
    lane is empty or the sweep ends. The sweep's thread only starts workers and
    writes results, so a slow database write never leaves a thread idle."""

    def __init__(self, sweep: Sweep, lane: Lane):
        self.sweep = sweep
        self.lane = lane
        self.provider_id = lane.provider_id
        self.current: Target | DispatchRetry | None = None
        self.call_started: float | None = None

    @property
    def current_run_id(self) -> int | None:
        item = self.current
        if item is None:
            return None
        return item.run_id if isinstance(item, DispatchRetry) else item.run.pk

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

    def _handle(self, item: Target | DispatchRetry) -> PollResult | DispatchDone | None:
        if isinstance(item, DispatchRetry):
            self.call_started = time.monotonic()
            try:
                return DispatchDone(item, item())
            finally:
                self.call_started = None
        sweep = self.sweep
        endpoint = sweep.endpoints[item.endpoint]
        with sweep.r.lock:
            if endpoint.open_reason:
                return PollResult(
                    item, skipped=endpoint.open_reason, retry_after=endpoint.retry_after
                )
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


# --- endpoints: the sweep's in-process circuit view ---------------------------------------


@dataclass
class Endpoint:
    """In-process circuit view of one provider endpoint for this sweep. Lane
    workers read and update it under the reconciler's lock."""

    provider_id: str
    base_url: str
    open_reason: str = ""
    retry_after: float | None = None
    half_open: bool = False  # the shared circuit's open period ended: probe first
    probe_in_flight: bool = False
    deferred: list[Target] = field(default_factory=list)
    consecutive_failures: int = 0
    shared_failures: int = 0  # main thread only: as last known in the database


class CircuitView:
    """The circuit half of ``Sweep`` (a mixin: its state is set up by
    ``Sweep.__init__``). Runs on the sweep's thread, except ``note_outcome``
    (lane workers, under the lock)."""

    r: Reconciler
    lanes: dict[str, Lane]
    endpoints: dict[tuple[str, str], Endpoint]
    circuits_loaded: set[tuple[str, str]]
    breaker_threshold: int

    def _endpoint(self, key: tuple[str, str]) -> Endpoint:
        if key not in self.endpoints:
            self.endpoints[key] = Endpoint(*key)
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

    def note_outcome(self, endpoint: Endpoint, result: PollResult, probe: bool) -> None:
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

    def _record_circuit(self, result: PollResult) -> None:
        """Sweep thread: keep the shared (database) circuit up to date."""
        if result.skipped or result.target.adapter is None:
            return
        endpoint = self._endpoint(result.target.endpoint)  # may come from an earlier sweep
        if _counts_as_outage(result.error):
            circuit.record_failure(
                endpoint.provider_id, endpoint.base_url, error_message(result.error)
            )
            endpoint.shared_failures += 1
        elif not isinstance(result.error, TransientError) and endpoint.shared_failures:
            circuit.record_success(endpoint.provider_id, endpoint.base_url)
            endpoint.shared_failures = 0


def _counts_as_outage(error: BaseException | None) -> bool:
    # Rate limits are not outages: the HTTP gate already holds requests back.
    return isinstance(error, TransientError) and not isinstance(error, RateLimited)
