"""The reconciler's public entry points (``execution.reconcile`` is the
package that implements them).

This module is the stable import path: the django-q2 schedule row stores
``execution.reconciler.scheduled_sweep``, and the API, the admin and
``manage.py reconcile`` call through it.
"""

from __future__ import annotations

from execution.reconcile.heartbeat import fail_lost_local_runs
from execution.reconcile.reconciler import (
    BACKLOG_BATCHES,
    SCHEDULE_NAME,
    SCHEDULED_TASK,
    STUCK_AFTER_S,
    Reconciler,
    reconcile_all_due,
    reconcile_run,
    reconcile_sweep,
    scheduled_sweep,
)
from execution.reconcile.types import SweepReport

__all__ = [
    "BACKLOG_BATCHES",
    "SCHEDULED_TASK",
    "SCHEDULE_NAME",
    "STUCK_AFTER_S",
    "Reconciler",
    "SweepReport",
    "fail_lost_local_runs",
    "reconcile_all_due",
    "reconcile_run",
    "reconcile_sweep",
    "scheduled_sweep",
]
