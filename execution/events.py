"""Appending run events: per-run, gap-free, monotonically increasing ``sequenceNo``.

Sequence numbers come from ``Run.last_sequence_no``: one ``UPDATE … SET
last_sequence_no = last_sequence_no + n`` reserves a block for a batch. The
update holds the run row's write lock until commit, so concurrent writers get
disjoint blocks on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from execution.models import Run, RunEvent, Stream


@dataclass(frozen=True)
class NewEvent:
    stream: str
    event_type: str
    text: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    actor: str = ""
    occurred_at: datetime | None = None


def append_events(run_id: int, events: Sequence[NewEvent]) -> list[RunEvent]:
    """Store ``events`` after the run's existing ones, in order; returns the rows."""
    if not events:
        return []
    now = timezone.now()
    with transaction.atomic():
        Run.objects.filter(pk=run_id).update(last_sequence_no=F("last_sequence_no") + len(events))
        last = Run.objects.filter(pk=run_id).values_list("last_sequence_no", flat=True).get()
        first = last - len(events) + 1
        rows = [
            RunEvent(
                run_id=run_id,
                sequence_no=first + offset,
                stream=event.stream,
                event_type=event.event_type,
                text=event.text,
                payload=event.payload,
                actor=event.actor,
                occurred_at=event.occurred_at or now,
            )
            for offset, event in enumerate(events)
        ]
        RunEvent.objects.bulk_create(rows)
    return rows


def audit(
    run_id: int, event_type: str, text: str, *, actor: str = "system", **payload: Any
) -> None:
    """One system event recording who did what (approvals, cancels, fallbacks, …)."""
    append_events(
        run_id,
        [NewEvent(Stream.SYSTEM, event_type, text=text, payload=payload, actor=actor)],
    )
