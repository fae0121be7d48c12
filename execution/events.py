"""Appending run events: per-run, gap-free, monotonically increasing ``sequenceNo``.

Sequence numbers come from ``Run.last_sequence_no``: one ``UPDATE … SET
last_sequence_no = last_sequence_no + n`` reserves a block for a batch. The
update holds the run row's write lock until commit, so concurrent writers get
disjoint blocks on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
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


def append_events_many(batches: Mapping[int, Sequence[NewEvent]]) -> None:
    """``append_events`` for many runs at once (run id → its events): runs
    appending as many events reserve their sequence numbers in one UPDATE and
    every row goes in one ``bulk_create``, a few statements for all of them
    instead of three per run. The same guarantees: each UPDATE holds its run
    rows' write locks until commit."""
    wanted = {run_id: list(events) for run_id, events in batches.items() if events}
    if not wanted:
        return
    now = timezone.now()
    by_count: dict[int, list[int]] = defaultdict(list)
    for run_id, events in wanted.items():
        by_count[len(events)].append(run_id)
    with transaction.atomic():
        for count, run_ids in by_count.items():
            for chunk in chunked(run_ids):
                Run.objects.filter(pk__in=chunk).update(
                    last_sequence_no=F("last_sequence_no") + count
                )
        last: dict[int, int] = {}
        for chunk in chunked(list(wanted)):
            last.update(Run.objects.filter(pk__in=chunk).values_list("pk", "last_sequence_no"))
        rows = [
            RunEvent(
                run_id=run_id,
                sequence_no=last[run_id] - len(events) + 1 + offset,
                stream=event.stream,
                event_type=event.event_type,
                text=event.text,
                payload=event.payload,
                actor=event.actor,
                occurred_at=event.occurred_at or now,
            )
            for run_id, events in wanted.items()
            for offset, event in enumerate(events)
        ]
        RunEvent.objects.bulk_create(rows)


def chunked(ids: list[int]) -> Iterator[list[int]]:
    """``ids`` in pieces that fit one statement's parameters."""
    size = max(1, min(1000, (connection.features.max_query_params or 1000) - 20))
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def audit(
    run_id: int, event_type: str, text: str, *, actor: str = "system", **payload: Any
) -> None:
    """One system event recording who did what (approvals, cancels, fallbacks, …)."""
    append_events(
        run_id,
        [NewEvent(Stream.SYSTEM, event_type, text=text, payload=payload, actor=actor)],
    )
