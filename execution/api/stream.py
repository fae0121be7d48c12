"""Live run events as Server-Sent Events: ``GET runs/{id}/stream``.

The stream carries two kinds of message on one connection:

* ``event: log`` — one stored run event, ``id:`` its ``sequenceNo`` and
  ``data:`` the event as ``GET runs/{id}/events`` shows it. Events are sent in
  sequence order, each exactly once per connection, and only contiguously: a
  number that is not yet visible (a writer's transaction still open) holds the
  later ones back for up to ``GAP_WAIT_S``, so a client never has to reorder.
* ``event: run`` — the run's live fields (status, sync status, sync error,
  native status, times), sent when the stream opens and whenever one of them
  changes. It carries no ``id:``, so the browser's last event id stays the
  last log sequence number.

Resuming: the browser's ``EventSource`` reconnects by itself with a
``Last-Event-ID`` header; the stream continues after that sequence number
(``afterSequence=`` in the query string does the same for the first
connection). A stream ends after ``MAX_STREAM_S`` (the browser reconnects and
resumes), or with ``event: end`` once the run has finished and every event
has been sent.

Why polling the database: events are written by workers and reconcilers in
other processes; a read of the run's ``last_sequence_no`` every
``POLL_INTERVAL_S`` is one indexed row read, and it keeps the endpoint free of
a message broker. Under gunicorn each open stream holds one thread
(``gthread`` workers; see the README's "Operating it").
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

from rest_framework.renderers import BaseRenderer

from execution.models import Run, RunEvent
from execution.states import TERMINAL_STATUSES

POLL_INTERVAL_S = 0.25
KEEPALIVE_S = 15.0
# A stream's lifetime; the browser reconnects and resumes. Shorter only where
# clients should not wait (the API fuzz run sets EXECUTION_STREAM_MAX_S=2).
MAX_STREAM_S = float(os.environ.get("EXECUTION_STREAM_MAX_S", "300"))
GAP_WAIT_S = 2.0
BATCH = 500
RETRY_MS = 1000

# The run fields a page updates live (camelCase, as in the run JSON).
LIVE_FIELDS = {
    "status": "status",
    "statusReason": "status_reason",
    "syncStatus": "sync_status",
    "lastSyncError": "last_sync_error",
    "lastReconciledAt": "last_reconciled_at",
    "providerStatusRaw": "provider_status_raw",
    "providerRunId": "provider_run_id",
    "providerUrl": "provider_url",
    "startedAt": "started_at",
    "endedAt": "ended_at",
    "exitCode": "exit_code",
    # A cancel the provider refused, then accepted, changes no status.
    "cancelState": "cancel_state",
    "cancelError": "cancel_error",
    "lastSequenceNo": "last_sequence_no",
}


class EventStreamRenderer(BaseRenderer):
    """Lets DRF's content negotiation accept ``Accept: text/event-stream``
    (what ``EventSource`` sends); errors before the stream starts are still
    rendered as the usual JSON error body."""

    media_type = "text/event-stream"
    format = "sse"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type=None, renderer_context=None) -> bytes:
        return json.dumps(data).encode()


def message(event: str, data: Any, event_id: int | None = None) -> str:
    """One SSE message; ``data`` is JSON on one line (JSON escapes newlines)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def live_state(run_id: int) -> dict[str, Any] | None:
    row = Run.objects.filter(pk=run_id).values(*LIVE_FIELDS.values()).first()
    if row is None:
        return None
    state = {}
    for api_name, column in LIVE_FIELDS.items():
        value = row[column]
        state[api_name] = (
            value.isoformat().replace("+00:00", "Z") if hasattr(value, "isoformat") else value
        )
    return state


def event_data(event: RunEvent) -> dict[str, Any]:
    return {
        "sequenceNo": event.sequence_no,
        "stream": event.stream,
        "eventType": event.event_type,
        "text": event.text,
        "payload": event.payload,
        "occurredAt": event.occurred_at.isoformat().replace("+00:00", "Z"),
        "actor": event.actor,
    }


def run_stream(
    run_id: int,
    after: int,
    *,
    max_seconds: float = MAX_STREAM_S,
    poll_interval: float = POLL_INTERVAL_S,
) -> Iterator[str]:
    """The SSE body for one connection, resuming after sequence ``after``."""
    yield f"retry: {RETRY_MS}\n\n"
    started = time.monotonic()
    last_sent = time.monotonic()
    last_state: dict[str, Any] | None = None
    gap_since: float | None = None
    while time.monotonic() - started < max_seconds:
        state = live_state(run_id)
        if state is None:
            yield message("end", {"reason": "deleted"})
            return
        if state["lastSequenceNo"] > after:
            events = list(
                RunEvent.objects.filter(run_id=run_id, sequence_no__gt=after).order_by(
                    "sequence_no"
                )[:BATCH]
            )
            for event in events:
                if event.sequence_no != after + 1:
                    # A later number is visible before this one: wait for it
                    # a little, then move on rather than stall for ever.
                    gap_since = gap_since or time.monotonic()
                    if time.monotonic() - gap_since < GAP_WAIT_S:
                        break
                gap_since = None
                after = event.sequence_no
                yield message("log", event_data(event), after)
                last_sent = time.monotonic()
            if events and after >= events[-1].sequence_no and len(events) == BATCH:
                continue  # more are waiting: no sleep
        public = {k: v for k, v in state.items() if k != "lastSequenceNo"}
        if public != last_state:
            last_state = public
            yield message("run", public)
            last_sent = time.monotonic()
        if state["status"] in TERMINAL_STATUSES and after >= state["lastSequenceNo"]:
            yield message("end", {"reason": "finished", "lastSequenceNo": after})
            return
        if time.monotonic() - last_sent >= KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        time.sleep(poll_interval)
