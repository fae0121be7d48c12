"""``manage.py reconcile``: reconcile runs from the command line.

    manage.py reconcile                      every run due when it starts, then exit
    manage.py reconcile --provider cursor    only that provider's runs
    manage.py reconcile --run 42             poll run 42 now (manual refresh)
    manage.py reconcile --loop               sweep until SIGTERM/SIGINT

One progress line per sweep. ``--loop`` is the fast cadence django-q2's
scheduler (about every 30 s) cannot give: a sweep keeps claiming batches while
they come back full (a backlog), and the next sweep starts after
``--interval`` seconds. A hanging provider's calls do not hold a sweep open:
the next sweep stores their results. On SIGTERM or
SIGINT it finishes the polls in flight, releases the runs it claimed but did
not poll, and exits 0.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections, connection

from execution.models import Run
from execution.reconcile.claims import release_all
from execution.reconciler import (
    BACKLOG_BATCHES,
    Reconciler,
    SweepReport,
    reconcile_all_due,
    reconcile_run,
)

DEFAULT_LOOP_INTERVAL_S = 1.0


class Command(BaseCommand):
    help = "Reconcile active external runs with their providers (once, or --loop)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--run", type=int, help="Poll this run now, whatever its schedule.")
        parser.add_argument("--provider", help="Only runs of this provider id.")
        parser.add_argument(
            "--loop", action="store_true", help="Keep sweeping until SIGTERM/SIGINT."
        )
        parser.add_argument(
            "--interval",
            type=float,
            default=DEFAULT_LOOP_INTERVAL_S,
            help="Seconds between sweeps with --loop when nothing is waiting (default 1).",
        )
        parser.add_argument("--batch", type=int, help="Runs claimed per batch.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["run"] is not None:
            self._one_run(options["run"])
            return
        if options["interval"] <= 0:
            raise CommandError("--interval must be positive.")
        stop = threading.Event()
        reconciler = Reconciler(batch_size=options["batch"])
        if not options["loop"]:
            # However many batches it takes (not just the first one).
            with reconciler:
                self._line(reconcile_all_due(reconciler, provider_id=options["provider"]))
            return
        previous = self._install_signal_handlers(stop)
        try:
            with reconciler:  # on exit: finish the calls in flight and store them
                self._loop(reconciler, stop, options)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            release_all(reconciler.worker_id)  # safety net: nothing stays claimed
        self.stdout.write(f"reconciler {reconciler.worker_id} stopped")

    def _loop(self, reconciler: Reconciler, stop: threading.Event, options: dict) -> None:
        self.stdout.write(f"reconciler {reconciler.worker_id} started")
        last_line = time.monotonic()
        while not stop.is_set():
            if not connection.in_atomic_block:  # (tests run the loop inside one)
                # As Django does between requests: drop broken or expired connections.
                close_old_connections()
            # A hanging provider's calls outlive the sweep; the next one collects them.
            report = reconciler.sweep(
                provider_id=options["provider"],
                stop_event=stop,
                wait_for_stuck=False,
                max_batches=BACKLOG_BATCHES,
            )
            # Idle sweeps (every second) would bury everything else in the
            # terminal: print them once a minute, as a sign of life.
            if not _idle(report) or time.monotonic() - last_line >= IDLE_LINE_EVERY_S:
                self._line(report)
                last_line = time.monotonic()
            if report.claimed < reconciler.batch_size * BACKLOG_BATCHES:
                stop.wait(options["interval"])

    def _one_run(self, run_id: int) -> None:
        try:
            run = reconcile_run(run_id, actor="cli")
        except Run.DoesNotExist:
            raise CommandError(f"Run {run_id} does not exist.") from None
        self.stdout.write(
            f"run {run.pk}: provider={run.provider_id} status={run.status} "
            f"syncStatus={run.sync_status} providerStatusRaw={run.provider_status_raw or '-'}"
            + (f" lastSyncError={run.last_sync_error}" if run.last_sync_error else "")
        )

    def _line(self, report: SweepReport) -> None:
        self.stdout.write(f"sweep {report.summary_line()}")
        self.stdout.flush()

    def _install_signal_handlers(self, stop: threading.Event) -> dict[int, Any]:
        def request_stop(signum: int, frame: Any) -> None:
            stop.set()

        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, request_stop)
        return previous


IDLE_LINE_EVERY_S = 60.0


def _idle(report: SweepReport) -> bool:
    return not (report.claimed or report.dispatched or report.worker_lost or report.error_count)
