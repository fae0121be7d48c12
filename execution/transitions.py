"""The only way a run's status changes: checked against ``TRANSITIONS`` and
applied with compare-and-swap, so two workers can never both move a run."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from execution.events import NewEvent, append_events, append_events_many, chunked
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
    updates = _updates(run, new_status, reason, timezone.now(), fields)
    with transaction.atomic():
        if not Run.objects.filter(pk=run.pk, status=old).update(**updates):
            return False
        append_events(run.pk, [_status_changed(old, new_status, reason, message, actor)])
    for name, value in updates.items():
        setattr(run, name, value)
    return True


@dataclass(frozen=True)
class Move:
    """One run's transition for ``transition_many``: from the status ``run``
    was read with to ``new_status``, with ``fields`` in the same UPDATE."""

    run: Run
    new_status: str
    reason: str = ""
    message: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)


def transition_many(
    moves: Sequence[Move], *, lease_owner: str, actor: str = "system"
) -> list[Move]:
    """``transition`` for many runs at once (a sweep storing the runs that
    ended), in a few statements instead of five per run: runs writing the
    same values share an UPDATE, their events share an insert.

    The same rules and ``status_changed`` event, and one more condition: a
    run is moved only if it is still in the status it was read with *and*
    still leased by ``lease_owner`` (the reconciler's compare-and-swap). Runs
    moved by another writer meanwhile, or whose lease was taken over, are left
    alone. Returns the moves applied (their in-memory runs updated); raises
    ``InvalidTransition``, before writing anything, for a move the table
    forbids."""
    for move in moves:
        if not can_transition(move.run.status, move.new_status):
            raise InvalidTransition(move.run.status, move.new_status)
    if not moves:
        return []
    now = timezone.now()
    updates = {m.run.pk: _updates(m.run, m.new_status, m.reason, now, m.fields) for m in moves}
    with transaction.atomic():
        held: dict[int, str] = {}
        for chunk in chunked([move.run.pk for move in moves]):
            # Locked until commit (PostgreSQL; SQLite's writer holds the database).
            mine = Run.objects.select_for_update().filter(pk__in=chunk, lease_owner=lease_owner)
            held.update(mine.values_list("pk", "status"))
        applied = [move for move in moves if held.get(move.run.pk) == move.run.status]
        same: dict[tuple, list[int]] = defaultdict(list)
        for move in applied:
            same[(move.run.status, _values_key(updates[move.run.pk]))].append(move.run.pk)
        for (old, _), run_ids in same.items():
            for chunk in chunked(run_ids):
                Run.objects.filter(pk__in=chunk, status=old).update(**updates[chunk[0]])
        append_events_many(
            {
                move.run.pk: [
                    _status_changed(
                        move.run.status, move.new_status, move.reason, move.message, actor
                    )
                ]
                for move in applied
            }
        )
    for move in applied:
        for name, value in updates[move.run.pk].items():
            setattr(move.run, name, value)
    return applied


def _updates(
    run: Run, new_status: str, reason: str, now: datetime, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """What moving ``run`` to ``new_status`` writes, ``fields`` included."""
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
    return updates


def _status_changed(old: str, new: str, reason: str, message: str, actor: str) -> NewEvent:
    return NewEvent(
        Stream.SYSTEM,
        "status_changed",
        text=f"{old} → {new}" + (f": {message}" if message else ""),
        payload={"from": old, "to": new, "reason": reason},
        actor=actor,
    )


def _values_key(updates: Mapping[str, Any]) -> tuple:
    return tuple(
        sorted(
            (name, json.dumps(value, sort_keys=True, default=str))
            for name, value in updates.items()
        )
    )
