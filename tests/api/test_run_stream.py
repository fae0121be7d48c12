"""``GET runs/{id}/stream``: Server-Sent Events of a run's events and live
fields, each event once and in order, resumable by ``Last-Event-ID``."""

from __future__ import annotations

import json
import threading
import time

import pytest

from execution.api import stream as live
from execution.events import NewEvent, append_events
from execution.models import Stream
from tests.api.helpers import add_events, error_code, make_run

pytestmark = pytest.mark.django_db


def stream_url(run) -> str:
    return f"/api/execution/runs/{run.pk}/stream"


def parse(body: str) -> list[dict]:
    """The SSE messages of ``body`` as dicts (id, event, data)."""
    messages = []
    for block in body.split("\n\n"):
        fields: dict = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            fields["data"] = json.loads(fields["data"])
            messages.append(fields)
    return messages


def read(response) -> list[dict]:
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    return parse(b"".join(response.streaming_content).decode())


def test_a_finished_run_streams_every_event_once_in_order_then_ends(project, viewer):
    from tests.conftest import client_for

    run = make_run(project, status="succeeded")
    add_events(run, 5)
    messages = read(client_for(viewer).get(stream_url(run), HTTP_ACCEPT="text/event-stream"))
    logs = [m for m in messages if m["event"] == "log"]
    assert [int(m["id"]) for m in logs] == [1, 2, 3, 4, 5]
    assert [m["data"]["text"] for m in logs] == [f"line {n}\n" for n in range(1, 6)]
    assert [m["event"] for m in messages][-2:] == ["run", "end"]
    assert messages[-2]["data"]["status"] == "succeeded"


def test_last_event_id_resumes_after_that_sequence(project, viewer_client):
    run = make_run(project, status="failed")
    add_events(run, 6)
    messages = read(
        viewer_client.get(stream_url(run), HTTP_ACCEPT="text/event-stream", HTTP_LAST_EVENT_ID="4")
    )
    assert [int(m["id"]) for m in messages if m["event"] == "log"] == [5, 6]


def test_after_sequence_query_parameter_starts_there(project, viewer_client):
    run = make_run(project, status="failed")
    add_events(run, 3)
    messages = read(viewer_client.get(stream_url(run) + "?afterSequence=2"))
    assert [int(m["id"]) for m in messages if m["event"] == "log"] == [3]


def test_line_breaks_and_streams_are_kept(project, viewer_client):
    run = make_run(project, status="succeeded")
    append_events(
        run.pk,
        [
            NewEvent(Stream.STDOUT, "output", text="one\ntwo\n"),
            NewEvent(Stream.STDERR, "output", text="oops\n"),
        ],
    )
    logs = [m for m in read(viewer_client.get(stream_url(run))) if m["event"] == "log"]
    assert [(m["data"]["stream"], m["data"]["text"]) for m in logs] == [
        ("stdout", "one\ntwo\n"),
        ("stderr", "oops\n"),
    ]


def test_events_and_status_arrive_live_while_the_run_runs(
    project, viewer_client, monkeypatch, transactional_db
):
    """New events stored while the stream is open are pushed, then the
    status change, then the end — each event exactly once."""
    monkeypatch.setattr(live, "POLL_INTERVAL_S", 0.02)
    run = make_run(project, status="running")
    add_events(run, 2)

    def writer():
        time.sleep(0.2)
        add_events(run, 3)
        time.sleep(0.1)
        type(run).objects.filter(pk=run.pk).update(status="succeeded")

    thread = threading.Thread(target=writer)
    thread.start()
    response = viewer_client.get(stream_url(run))
    messages = read(response)
    thread.join()
    logs = [int(m["id"]) for m in messages if m["event"] == "log"]
    assert logs == [1, 2, 3, 4, 5]
    statuses = [m["data"]["status"] for m in messages if m["event"] == "run"]
    assert statuses == ["running", "succeeded"]
    assert messages[-1]["event"] == "end"


def test_a_stream_ends_after_its_maximum_life(project, viewer_client, monkeypatch):
    monkeypatch.setattr(live, "POLL_INTERVAL_S", 0.01)
    run = make_run(project, status="running")
    messages = parse("".join(live.run_stream(run.pk, 0, max_seconds=0.05, poll_interval=0.01)))
    assert [m["event"] for m in messages] == ["run"]


def test_stream_of_a_run_outside_my_projects_is_404(other_run, viewer_client):
    response = viewer_client.get(stream_url(other_run), HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 404


def test_a_bad_last_event_id_is_a_400(project, viewer_client):
    run = make_run(project, status="failed")
    response = viewer_client.get(stream_url(run), HTTP_LAST_EVENT_ID="x")
    assert response.status_code == 400
    assert error_code(response) == "invalid"
