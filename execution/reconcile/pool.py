"""The reconciler's threads: lanes of work and the pool that works them.

A ``Lane`` is one provider's queue of work items for a sweep. A ``WorkerPool``
owns its threads, the list of ``LaneWorker``s, the lock that guards that list
and the queue results come back on; everyone else calls its methods. What a
worker does with an item is the sweep's business (a ``handle`` callable): the
pool only runs it, times it (a call in flight longer than ``stuck_after_s``
is *stuck*) and hands its results back.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from execution.reconcile.types import DispatchRetry, Result, Target, WorkItem


@dataclass
class Lane:
    """One provider's work items for a sweep (``deque`` pops are thread-safe).

    ``queue`` holds status reads (and dispatch retries), ``logs`` the log
    reads of runs whose status is already stored (``Target.logs_only``). Both
    share the provider's workers, but a log read is taken only when no status
    read is waiting, and not while the sweep ``hold_logs`` (its status results
    are still being read or stored): logs never hold a status back.
    ``group_size`` is how many runs of one endpoint a worker takes at once:
    1 unless the provider can answer for several runs in one request."""

    provider_id: str
    cap: int
    group_size: int = 1
    queue: deque = field(default_factory=deque)
    logs: deque = field(default_factory=deque)
    hold_logs: bool = False

    def waiting(self) -> int:
        """Items not taken yet, status and log reads."""
        return len(self.queue) + len(self.logs)

    def takeable(self) -> int:
        """Items a worker would take now."""
        return len(self.queue) + (0 if self.hold_logs else len(self.logs))

    def take(self) -> list[WorkItem]:
        """The next status read, or a group of up to ``group_size``
        consecutive ``Target``s of one endpoint; else the next log read; ``[]``
        when the lane is empty. Runs read alone and log reads are never
        grouped."""
        try:
            first = self.queue.popleft()
        except IndexError:
            if self.hold_logs:
                return []
            try:
                return [self.logs.popleft()]
            except IndexError:
                return []
        group: list[WorkItem] = [first]
        if not _groups(first):
            return group
        while len(group) < self.group_size:
            try:
                item = self.queue.popleft()
            except IndexError:
                break
            if not _groups(item) or item.endpoint != first.endpoint:
                self.queue.appendleft(item)
                break
            group.append(item)
        return group

    def put_back(self, items: list[WorkItem]) -> None:
        """Items that must go first (released by a circuit probe)."""
        self.queue.extendleft(reversed(items))

    def drain(self) -> Iterator[WorkItem]:
        for items in (self.queue, self.logs):
            while True:
                try:
                    yield items.popleft()
                except IndexError:
                    break


def _groups(item: WorkItem) -> bool:
    return isinstance(item, Target) and not (item.logs_only or item.alone)


Handle = Callable[[list[WorkItem]], list[Result]]


@dataclass(frozen=True)
class Census:
    """The pool at one instant: ``working`` counts calls that are not stuck;
    ``per_provider`` every worker (stuck or not); ``stuck`` stuck workers per
    provider; ``waiting`` workers per lane that have not taken an item yet;
    ``reading`` workers per provider on a status read (not a log read) that
    is not stuck."""

    total: int
    working: int
    per_provider: Counter[str]
    stuck: Counter[str]
    waiting: Counter[int]
    reading: Counter[str] = field(default_factory=Counter)


class LaneWorker:
    """Works through one lane in a pool thread: takes the next item, has the
    sweep handle it, hands the results back, and goes on until the lane is
    empty or ``should_stop()``."""

    def __init__(self, lane: Lane, handle: Handle, should_stop: Callable[[], bool]):
        self.lane = lane
        self.provider_id = lane.provider_id
        self.handle = handle
        self.should_stop = should_stop
        self.current: list[WorkItem] = []
        self.call_started: float | None = None

    def run_ids(self) -> list[int]:
        return [item.run_id for item in self.current]

    def reads_status(self) -> bool:
        """Busy with anything but a log read."""
        current = self.current
        return bool(current) and not (isinstance(current[0], Target) and current[0].logs_only)

    def stuck(self, now_m: float, after_s: float) -> bool:
        started = self.call_started
        return started is not None and now_m - started >= after_s

    def work(self, results: queue.SimpleQueue) -> None:
        while not self.should_stop():
            self.current = self.lane.take()
            if not self.current:
                break
            self.call_started = time.monotonic()
            try:
                handled = self.handle(self.current)
                for result in handled:
                    results.put(result)
                if not handled:
                    # Nothing to store, but the lane may have grown (a batch
                    # poll put runs back to read alone): the sweep starts
                    # workers for them now, not at its next turn.
                    results.put(_WAKE_UP)
            finally:
                self.call_started = None
                self.current = []


_WAKE_UP = object()  # wakes up whoever waits for results (a worker exited, say)


class WorkerPool:
    """The threads of one reconciler. At most ``size`` threads; the sweep
    decides how many workers to start (``census`` tells it what is running)."""

    def __init__(self, size: int, *, stuck_after_s: float, inline: bool = False):
        self.size = size
        self.stuck_after_s = stuck_after_s
        self.inline = inline  # run workers on the calling thread
        self._lock = threading.Lock()
        self._workers: list[LaneWorker] = []
        self._results: queue.SimpleQueue = queue.SimpleQueue()
        self._executor: ThreadPoolExecutor | None = None

    def start(self, lane: Lane, handle: Handle, should_stop: Callable[[], bool]) -> None:
        """One more worker on ``lane``."""
        worker = LaneWorker(lane, handle, should_stop)
        with self._lock:
            self._workers.append(worker)
        if self.inline:
            self._run(worker)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.size, thread_name_prefix="reconcile")
        self._executor.submit(self._run, worker)

    def _run(self, worker: LaneWorker) -> None:
        try:
            worker.work(self._results)
        finally:
            with self._lock:
                self._workers.remove(worker)
            self._results.put(_WAKE_UP)

    # --- what is running ---------------------------------------------------------

    def census(self) -> Census:
        now_m = time.monotonic()
        with self._lock:
            workers = list(self._workers)
        stuck_now = {id(w) for w in workers if w.stuck(now_m, self.stuck_after_s)}
        stuck = Counter(w.provider_id for w in workers if id(w) in stuck_now)
        return Census(
            total=len(workers),
            working=len(workers) - sum(stuck.values()),
            per_provider=Counter(w.provider_id for w in workers),
            stuck=stuck,
            waiting=Counter(id(w.lane) for w in workers if not w.current),
            reading=Counter(
                w.provider_id for w in workers if id(w) not in stuck_now and w.reads_status()
            ),
        )

    def in_flight_ids(self) -> set[int]:
        """Runs whose calls are in flight (their leases stay held)."""
        with self._lock:
            return {pk for w in self._workers for pk in w.run_ids()}

    def busy(self) -> bool:
        with self._lock:
            return bool(self._workers)

    # --- results ---------------------------------------------------------------------

    def results(self, timeout: float) -> list[Result]:
        """Results handed back so far, waiting up to ``timeout`` for the first."""
        out: list[Result] = []
        try:
            item = self._results.get(timeout=timeout)
        except queue.Empty:
            return out
        while True:
            if item is not _WAKE_UP:
                out.append(item)
            try:
                item = self._results.get_nowait()
            except queue.Empty:
                return out

    def has_results(self) -> bool:
        return not self._results.empty()

    def wait_idle(self) -> list[Result]:
        """Wait for every call in flight to finish; returns every result not
        collected yet."""
        out: list[Result] = []
        while self.busy() or self.has_results():
            out += self.results(timeout=0.05)
        return out

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


def is_dispatch(group: list[WorkItem]) -> bool:
    return len(group) == 1 and isinstance(group[0], DispatchRetry)
