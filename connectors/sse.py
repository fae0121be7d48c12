"""Server-Sent Events: a small incremental parser (WHATWG HTML § 9.2.6) and a
bounded reader of a streamed ``requests`` response.

Feed the parser bytes as they arrive; it returns the events completed so far. Lines
end in CRLF, LF or CR; ``:`` starts a comment; ``field: value`` loses one
leading space; ``data`` lines join with ``\\n``; a blank line dispatches.

Departures from the browser algorithm, on purpose: an event's ``id`` is its
own (not inherited from earlier events), so a client's cursor only moves on
events that carry an id; and an event with fields but empty data (``event:
done``) is still dispatched. An event cut off by the end of the stream is
never returned: a client must not count output it did not fully receive.
"""

from __future__ import annotations

import codecs
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import requests
import urllib3

_LINE_END = re.compile(r"\r\n|\r|\n")
READ_CHUNK = 8192


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None = None


class SseParser:
    """Incremental: keeps the partial line and the event being built between feeds."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._reset()

    def _reset(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._seen = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events completed by ``chunk`` (possibly none)."""
        self._buffer += self._decoder.decode(chunk)
        events: list[SseEvent] = []
        while (match := _LINE_END.search(self._buffer)) is not None:
            if match.group() == "\r" and match.end() == len(self._buffer):
                break  # maybe the first half of a CRLF split across chunks
            line, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._seen:
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data), self._id)
            self._reset()
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        else:
            return None  # "retry" and unknown fields
        self._seen = True
        return None


def read_events(response: requests.Response, *, budget_s: float) -> Iterator[SseEvent]:
    """Complete events of a ``stream=True`` response as they arrive, for at
    most ``budget_s`` seconds (checked between reads).

    ``read1`` returns the bytes that are there (chunked or close-delimited
    bodies alike) instead of waiting for a full buffer. A silence longer than
    the request's read timeout, or a dropped connection, ends the reading
    quietly: what was parsed stands, a caller resumes from its last event id.
    """
    parser = SseParser()
    deadline = time.monotonic() + budget_s
    try:
        while time.monotonic() < deadline:
            chunk = response.raw.read1(READ_CHUNK, decode_content=True)
            if not chunk:
                return
            yield from parser.feed(chunk)
    except (urllib3.exceptions.HTTPError, requests.RequestException, OSError):
        return
