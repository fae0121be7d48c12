"""Cancel of an external run: sent until the provider accepts it, and once
accepted, the run ends ``canceled``.

* The cancel request (``services.cancel``) moves the run to ``canceling`` with
  ``cancel_state = pending`` and queues a task that sends it at once.
* A provider that refuses (401, 5xx, timeout, ...) leaves it ``pending``: the
  refusal is recorded (``cancel_failed`` event, ``cancel_error``) and the
  reconciler sends it again with each poll once ``cancel_next_at`` has come,
  with exponential backoff, until the provider accepts or the run ends. A
  repeated cancel request sends it again at once.
* A provider that accepts (``CancelResult.accepted``) makes it ``accepted``:
  from then on whatever terminal status the provider reports, the run ends
  ``canceled`` (Devin, for one, may show ``finished`` after terminating a
  session; its docs do not promise which status a terminated session shows).
  A provider that answers "already ended" did not take the cancel: the run
  keeps the outcome it reached on its own (``outcome_of_cancel``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from connectors.base import CancelResult
from execution.backoff import reconcile_backoff
from execution.models import Run
from execution.states import CancelState, RunStatus, outcome_of_cancel

# The cancel task normally sends the cancel at once; the reconciler sends it
# itself if the task has not got it accepted by then.
TASK_GRACE_S = 15.0


def final_status(run: Run, reported: str | None, *, accepted_now: bool = False) -> str:
    """The terminal status of a canceling run whose provider reports
    ``reported`` (a canonical terminal status)."""
    if accepted_now or run.cancel_state == CancelState.ACCEPTED:
        return RunStatus.CANCELED
    return outcome_of_cancel(reported)


def accepted_fields() -> dict[str, Any]:
    return {"cancel_state": CancelState.ACCEPTED, "cancel_error": "", "cancel_next_at": None}


def refused_fields(run: Run, message: str, now: datetime) -> dict[str, Any]:
    """The provider refused: retry with backoff (``reconcile_backoff``)."""
    attempts = run.cancel_attempts + 1
    return {
        "cancel_attempts": attempts,
        "cancel_error": message[:2000],
        "cancel_next_at": now + timedelta(seconds=reconcile_backoff(attempts)),
    }


def requested_fields(now: datetime) -> dict[str, Any]:
    """A cancel requested (again): pending, the reconciler's retry after the
    task's own attempt had its chance."""
    return {
        "cancel_state": CancelState.PENDING,
        "cancel_next_at": now + timedelta(seconds=TASK_GRACE_S),
    }


def to_send(run: Run, now: datetime) -> bool:
    """The reconciler sends this run's cancel with its poll."""
    return (
        run.status == RunStatus.CANCELING
        and run.cancel_state == CancelState.PENDING
        and bool(run.provider_run_id)
        and (run.cancel_next_at is None or run.cancel_next_at <= now)
    )


def ended_by_answer(result: CancelResult) -> bool:
    """The cancel answer itself says the run is over."""
    return result.confirmed
