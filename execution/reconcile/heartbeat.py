"""The heartbeat check: local runs have no provider to ask, so their worker
beats on the run row; a run whose worker stopped beating for longer than
``HEARTBEAT_GRACE_S`` (the worker process died) is failed with reason
``worker_lost`` instead of being left "running" forever."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from execution.reconcile.claims import lost_local_runs
from execution.states import RunStatus
from execution.transitions import transition

# Runs failed per check; the next sweep takes the rest.
MAX_PER_CHECK = 500


def fail_lost_local_runs(now: datetime, run_ids: Sequence[int] | None = None) -> int:
    """Fail local runs whose worker stopped beating (``worker_lost``); returns
    how many. The check is repeated under the row lock (the write lock on
    SQLite), so a worker that beats at the last moment keeps its run."""
    grace_s = float(settings.EXECUTION["HEARTBEAT_GRACE_S"])
    failed = 0
    candidates = lost_local_runs(now, grace_s, run_ids).values_list("pk", flat=True)
    for pk in list(candidates[:MAX_PER_CHECK]):
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
