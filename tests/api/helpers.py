"""Helpers the API specs share."""

from __future__ import annotations

from execution.events import NewEvent, append_events
from execution.models import Run, Stream
from tests.factories import RunFactory


def make_run(project, **fields) -> Run:
    return RunFactory(project=project, **fields)


def add_events(run: Run, count: int, stream: str = Stream.STDOUT) -> None:
    append_events(
        run.pk,
        [NewEvent(stream, "output", text=f"line {n}\n") for n in range(1, count + 1)],
    )


def error_code(response) -> str:
    return response.json()["error"]["code"]
