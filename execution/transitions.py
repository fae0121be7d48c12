"""The only way a run's status changes: checked against ``TRANSITIONS`` and
applied with compare-and-swap, so two workers can never both move a run."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from execution.events import NewEvent, append_events
from execution.models import Run, Stream
from execution.states import TERMINAL_STATUSES, RunStatus, can_transition


class InvalidTransition(Exception):
    """The run's current status does not allow the requested one."""

    def __init__(self, old: str, new: str):
        super().__init__(f"cannot move a run from {old} to {new}")
        self.old = old
        self.new = new


def transition(
    run: Run,
    new_status: str,
    *,
    actor: str = "system",
    reason: str = "",
    message: str = "",
    **fields: Any,
) -> bool:
    """Move ``run`` from the status it was read with to ``new_status``.

    ``fields`` are written in the same UPDATE. Returns False (and changes
    nothing) when another writer moved the run first; raises
    ``InvalidTransition`` when the table forbids the move. On success the
    in-memory ``run`` is updated and a ``status_changed`` event is appended.
    """
    old = run.status
    if not can_transition(old, new_status):
        raise InvalidTransition(old, new_status)
    now = timezone.now()
    updates: dict[str, Any] = {"status": new_status, **fields}
    if reason:
        updates.setdefault("status_reason", reason)
    if new_status == RunStatus.RUNNING and run.started_at is None:
        updates.setdefault("started_at", now)
    if new_status in TERMINAL_STATUSES:
        updates.setdefault("ended_at", now)
        updates.setdefault("next_reconcile_at", None)
        updates.setdefault("lease_owner", "")
        updates.setdefault("lease_expires_at", None)
    with transaction.atomic():
        if not Run.objects.filter(pk=run.pk, status=old).update(**updates):
            return False
        text = f"{old} → {new_status}" + (f": {message}" if message else "")
        append_events(
            run.pk,
            [
                NewEvent(
                    Stream.SYSTEM,
                    "status_changed",
                    text=text,
                    payload={"from": old, "to": new_status, "reason": reason},
                    actor=actor,
                )
            ],
        )
    for name, value in updates.items():
        setattr(run, name, value)
    return True
