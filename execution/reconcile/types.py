"""The reconciler's plain data: what a sweep is asked to do, the work items its
pool threads handle, what they hand back, and what the sweep reports.

This module imports nothing from the rest of ``execution.reconcile``; every
other module of the package may import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connectors.base import CancelResult, LogEntry, ProviderAdapter, RunRef, RunState
from execution.models import Run

# The reconciler's one logger, whichever of its modules logs.
LOGGER_NAME = "execution.reconciler"


@dataclass(frozen=True)
class Limits:
    """How much one reconciler may do at once (from ``settings.EXECUTION``).

    ``concurrency`` threads working at once, ``provider_concurrency`` per
    provider; a call in flight longer than ``stuck_after_s`` no longer counts
    toward ``concurrency``, only toward its provider's cap. ``inline``: poll
    on the calling thread (manual refresh of one run)."""

    batch_size: int
    concurrency: int
    provider_concurrency: int
    stuck_after_s: float
    inline: bool = False


@dataclass(frozen=True)
class ClaimFilter:
    """Which runs a sweep claims.

    ``provider_id``/``run_ids`` narrow them; ``force`` ignores
    ``next_reconcile_at`` (manual refresh); ``due_before`` counts only runs
    that were due by then (the one-shot command: every run due when it
    started, not the runs it rescheduled itself)."""

    provider_id: str | None = None
    run_ids: Sequence[int] | None = None
    force: bool = False
    due_before: datetime | None = None


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
    cancels_sent: int = 0
    worker_lost: int = 0
    released: int = 0
    lost_writes: int = 0
    duration_s: float = 0.0
    lag_s: float = 0.0
    batches: int = 0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def add(self, other: SweepReport) -> None:
        """Fold ``other`` (a later batch of the same run of the command) in."""
        for name in (
            "claimed",
            "polled",
            "changed",
            "stale",
            "dispatched",
            "cancels_sent",
            "worker_lost",
            "released",
            "lost_writes",
            "duration_s",
            "batches",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        self.lag_s = max(self.lag_s, other.lag_s)

    def summary_line(self) -> str:
        errors = ",".join(f"{k}:{v}" for k, v in sorted(self.errors.items()))
        return (
            f"claimed={self.claimed} polled={self.polled} changed={self.changed} "
            f"errors={self.error_count}{f' ({errors})' if errors else ''} stale={self.stale} "
            f"dispatched={self.dispatched} worker_lost={self.worker_lost} "
            f"released={self.released} duration={self.duration_s:.2f}s lag={self.lag_s:.1f}s"
        )


@dataclass(frozen=True)
class Target:
    """One run to poll: its adapter, endpoint key, and whether logs may be due."""

    run: Run
    adapter: ProviderAdapter | None  # None: the provider is no longer registered
    endpoint: tuple[str, str]
    fetch_logs: bool
    log_interval_s: float
    # Send the cancel the provider has not accepted yet, before the poll.
    send_cancel: bool = False
    # Only the logs are wanted: the status was already read (by a batch poll)
    # and stored; the lines follow in the lane after every status read.
    logs_only: bool = False
    # Read the logs on every status change (not only at the end and every
    # ``log_interval_s``): off while the request budget is what limits.
    logs_on_change: bool = True
    # A batch poll's listing left the run out (it ended, say): its status is
    # read on its own, one lane item per run (so the lane's workers read them
    # side by side), and its logs follow like a batch-polled run's.
    alone: bool = False

    @property
    def ref(self) -> RunRef:
        """What the adapter sees: the run's ids, its own state and the facts a
        listing filters on, never the engine's bookkeeping."""
        run = self.run
        return RunRef(
            run.pk,
            run.provider_run_id,
            run.dispatch_key,
            dict(run.provider_state),
            created_at=run.created_at.timestamp() if run.created_at else None,
            provider_status_raw=run.provider_status_raw,
        )

    @property
    def run_id(self) -> int:
        return self.run.pk


@dataclass(frozen=True)
class DispatchRetry:
    """A queued run whose dispatch failed transiently: sent again through the
    dispatch pipeline (idempotent: it recovers a run already created)."""

    worker_id: str
    run_id: int
    provider_id: str
    own_thread: bool = True


WorkItem = Target | DispatchRetry


@dataclass
class PollResult:
    """What polling a ``Target`` gave: a state or an error (or why it was
    skipped), any log lines with the new log cursor, and the outcome of a
    cancel sent with the poll."""

    target: Target
    state: RunState | None = None
    error: BaseException | None = None
    skipped: str = ""  # why it was not polled (circuit open, provider hanging)
    skip_kind: str = "circuit_open"
    retry_after: float | None = None
    entries: list[LogEntry] = field(default_factory=list)
    log_cursor: dict[str, Any] | None = None
    logs_fetched_at: datetime | None = None
    log_error: BaseException | None = None
    cancel: CancelResult | None = None
    cancel_error: BaseException | None = None
    # Requests counted against the provider's quota per run for this answer
    # (a batch's requests shared by its runs); None: not measured.
    cost: float | None = None
    # A batch poll found the logs due: the sweep queues a logs-only read.
    logs_due: bool = False
    # The batch poll's listing did not hold the run: the sweep queues a read
    # of it alone (``Target.alone``) instead of storing this result.
    unlisted: bool = False


@dataclass(frozen=True)
class DispatchDone:
    """A ``DispatchRetry`` a pool thread has run, with dispatch's outcome."""

    item: DispatchRetry
    outcome: str


Result = PollResult | DispatchDone
