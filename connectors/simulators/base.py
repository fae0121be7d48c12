"""Shared machinery of the provider simulators.

A simulator is a real HTTP server on loopback that stands in for one external
provider. It follows the provider's published API description (paths, status codes,
bodies, headers), not any adapter's convenience. Pure
standard library, no Django: it starts instantly and can run in its own
process (``python -m connectors.simulators``).

Pieces
------
``SimulatorServer``
    A ``ThreadingHTTPServer`` on 127.0.0.1 (HTTP/1.1 keep-alive, daemon
    threads, listen backlog 128), a router, a request log, fault injection, a
    run store and the ``/_sim/`` control endpoints. Providers subclass it,
    add their routes and shape their own error bodies.
``SimRun`` / ``Step``
    A run follows a script of ``(native state, seconds)`` steps against a
    clock. The state is computed lazily when the run is read, so thousands of
    idle runs cost nothing; output that "grows while running" (logs, messages,
    stream events) is derived from the run's state history, so it is stable
    across reads and never stored twice.

Script markers in the prompt/command text (they combine): ``[sim:fail]`` ends
in the provider's failure state, ``[sim:hold]`` keeps the run running until
``advance``/``set_state``, ``[sim:slow]`` runs for about 20 s. Without a
marker a run is queued 0.5 s, runs 2 s, then succeeds.

Control endpoints: no auth, never delayed, faulted, logged or counted.

==========  ==========================  ======================================
GET         /_sim/stats                 creations, runs, requests per kind
GET         /_sim/requests?limit=N      request log, oldest first (default
                                        the last 1,000 entries)
GET         /_sim/faults                current faults (``Faults`` fields)
POST        /_sim/faults                partial update of ``Faults`` fields
DELETE      /_sim/faults                back to the faults the server started with
GET / POST  /_sim/options               provider options (partial update)
POST        /_sim/reset                 back to the start state (runs, faults,
                                        options, log, stats); in-flight hangs
                                        and streams are released
POST        /_sim/seed                  ``{"count", "state", ...attrs}`` ->
                                        201 ``{"count", "ids"}``
GET         /_sim/runs/{id}             state, script and history of a run
POST        /_sim/runs/{id}/advance     jump to the next scripted step
POST        /_sim/runs/{id}/state       ``{"state": s}``: enter ``s`` and hold
POST        /_sim/runs/{id}/vanish      the run answers 404 from now on
==========  ==========================  ======================================

Signed blob downloads (``/_blob/...``, the targets of log redirects) need
no auth and are neither faulted nor logged, like a storage host. Every other
path is an API path: it is logged (method, path, query, time, status, kind;
never a header value), counted per route kind, delayed by ``latency_ms`` and
subject to the next-N faults, in this order: hang, 5xx, rate limit, dropped
answer (handled, then the connection closes unanswered), then authentication.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import math
import re
import secrets
import socketserver
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

HOLD = math.inf
"""Duration of a step that lasts until the run is told otherwise."""

MARKER_FAIL = "[sim:fail]"
MARKER_HOLD = "[sim:hold]"
MARKER_SLOW = "[sim:slow]"

LOG_CAPACITY = 200_000
"""Request-log entries kept (oldest dropped first); bounds memory in benchmarks."""
SEED_LIMIT = 100_000


def iso(timestamp: float, *, millis: bool = False) -> str:
    """UTC ISO-8601 with a ``Z`` suffix, to the second (or millisecond).

    ``time.strftime`` rather than ``datetime``: this runs several times per
    answer on the benchmarked path.
    """
    seconds = math.floor(timestamp)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    if millis:
        return f"{text}.{int((timestamp - seconds) * 1000):03d}Z"
    return text + "Z"


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Step:
    """One step of a run's script: a native state held for ``seconds``."""

    state: str
    seconds: float = HOLD


def _held(steps: Sequence[Step]) -> list[Step]:
    """The script with its last step held forever (a script never runs out)."""
    if not steps:
        raise ValueError("a script needs at least one step")
    return [*steps[:-1], Step(steps[-1].state)]


@dataclass(eq=False, kw_only=True)
class SimRun:
    """A provider run driven by its script and a clock.

    ``sync(now)`` applies the transitions that are due; everything else reads
    ``state`` and ``history`` (``(state, entered_at)`` pairs, oldest first).
    Callers hold the simulator lock.
    """

    id: str
    steps: list[Step]
    created_at: float
    vanished: bool = False
    step_index: int = field(default=0, init=False)
    step_started_at: float = field(default=0.0, init=False)
    history: list[tuple[str, float]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.steps = _held(self.steps)
        self.step_started_at = self.created_at
        self.history.append((self.steps[0].state, self.created_at))

    @property
    def state(self) -> str:
        return self.steps[self.step_index].state

    @property
    def updated_at(self) -> float:
        return self.history[-1][1]

    def sync(self, now: float) -> None:
        """Apply every scripted transition due at ``now``."""
        while self.step_index + 1 < len(self.steps):
            ends_at = self.step_started_at + self.steps[self.step_index].seconds
            if now < ends_at:
                return
            self.step_index += 1
            self.step_started_at = ends_at
            self.history.append((self.steps[self.step_index].state, ends_at))

    def reschedule(self, now: float, delay: float, following: Sequence[Step]) -> None:
        """End the current step ``delay`` seconds from ``now``, then play ``following``."""
        self.sync(now)
        current = self.steps[self.step_index]
        held_for = now - self.step_started_at + delay
        self.steps = [*self.steps[: self.step_index], Step(current.state, held_for)]
        self.steps += _held(following)
        self.sync(now)

    def advance(self, now: float) -> bool:
        """Jump to the next scripted step now; False when already at the last one."""
        self.sync(now)
        if self.step_index + 1 >= len(self.steps):
            return False
        self.reschedule(now, 0.0, self.steps[self.step_index + 1 :])
        return True

    def force(self, state: str, now: float) -> None:
        """Enter ``state`` now and hold it (the rest of the script is dropped)."""
        self.reschedule(now, 0.0, [Step(state)])

    def first_entry(self, state: str) -> float | None:
        return next((at for entered, at in self.history if entered == state), None)

    def ticks(self, states: Iterable[str], interval: float, limit: int, now: float) -> list[float]:
        """Times at which the run completed each ``interval`` seconds spent in ``states``.

        Deterministic for the past, so output derived from it (log lines,
        messages, stream events) only ever grows at the end.
        """
        wanted = set(states)
        times: list[float] = []
        due = interval
        for index, (state, start) in enumerate(self.history):
            if state not in wanted:
                continue
            end = self.history[index + 1][1] if index + 1 < len(self.history) else now
            tick = start + due
            while tick <= end and len(times) < limit:
                times.append(tick)
                tick += interval
            due = tick - end
        return times

    def snapshot(self) -> dict[str, Any]:
        """The control view served by ``GET /_sim/runs/{id}``."""
        return {
            "id": self.id,
            "state": self.state,
            "vanished": self.vanished,
            "steps": [
                {"state": s.state, "seconds": None if s.seconds == HOLD else s.seconds}
                for s in self.steps
            ],
            "stepIndex": self.step_index,
            "history": [{"state": state, "at": iso(at, millis=True)} for state, at in self.history],
        }


# ------------------------------------------------------------------ HTTP plumbing


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Simulated {html.escape(title)}</title>"
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:40rem;margin:2rem auto;"
        "padding:0 1rem}@media (prefers-color-scheme:dark){body{background:#0d1117;"
        "color:#e6edf3}}</style></head><body>" + body + "</body></html>"
    )


class SimError(Exception):
    """Raised by a handler; the simulator renders it in the provider's error shape.

    ``body`` replaces the provider's default error body when a provider needs
    a different shape for one case (e.g. Devin's FastAPI validation errors).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.body = body


@dataclass
class SimRequest:
    """A parsed request as handlers see it (headers are case-insensitive)."""

    method: str
    path: str
    raw_query: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def int_arg(self, name: str, default: int, *, low: int = 1, high: int = 100) -> int:
        """An integer query parameter clamped to ``[low, high]``; 422 when not a number."""
        raw = self.arg(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SimError(422, "validation_error", f"{name} must be an integer") from None
        return min(max(value, low), high)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        """The JSON body (``{}`` when empty); 400 when it does not parse."""
        if not self.body:
            return {}
        try:
            return json.loads(self.body)
        except ValueError:
            raise SimError(400, "validation_error", "Problems parsing JSON") from None

    def json_object(self) -> dict[str, Any]:
        body = self.json()
        if not isinstance(body, dict):
            raise SimError(400, "validation_error", "Body should be a JSON object")
        return body


@dataclass
class Response:
    """What a handler answers: a complete body, or a ``stream`` of chunks.

    A streamed response has no Content-Length and closes the connection.
    """

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[[], Iterator[bytes]] | None = None

    @classmethod
    def json(cls, status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return cls(
            status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        )

    @classmethod
    def text(
        cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8"
    ) -> Response:
        return cls(status, text.encode(), {"Content-Type": content_type})

    @classmethod
    def redirect(cls, location: str) -> Response:
        return cls(302, b"", {"Location": location})


Handler = Callable[[SimRequest], Response]


@dataclass(frozen=True)
class Route:
    """``api`` routes get auth, faults and logging; others (``/_sim/``, blobs) do not."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler
    kind: str
    api: bool = True


class Router:
    """Method + path-template routing; ``{name}`` matches one path segment."""

    def __init__(self) -> None:
        self._routes: dict[str, list[Route]] = {}

    def add(
        self, method: str, template: str, handler: Handler, kind: str, *, api: bool = True
    ) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        route = Route(method, re.compile(f"^{regex}$"), handler, kind, api)
        self._routes.setdefault(method, []).append(route)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self._routes.get(method, ()):
            found = route.pattern.match(path)
            if found:
                return route, found.groupdict()
        return None


class _RequestHandler(BaseHTTPRequestHandler):
    """Hands every request to the owning simulator; quiet, keep-alive, one write per answer."""

    protocol_version = "HTTP/1.1"
    server_version = "ccdash-simulator"
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024  # headers and body leave in one send (flushed per request)
    timeout = 60  # idle keep-alive connections give their thread back

    def _serve(self) -> None:
        self.server.simulator.serve_request(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the per-request access log (the simulator keeps its own)."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # 64+ concurrent clients connect without refusals

    def __init__(self, address: tuple[str, int], simulator: SimulatorServer) -> None:
        self.simulator = simulator
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (socket.getfqdn), which
        # can stall on a machine without DNS; loopback needs no name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


# ------------------------------------------------------------------------ faults


@dataclass
class Faults:
    """Injected faults; the ``*_next`` counters are consumed one per API request."""

    latency_ms: float = 0.0
    fail_next: int = 0
    fail_status: int = 503
    rate_limit_next: int = 0
    retry_after: int = 1
    hang_next: int = 0
    hang_seconds: float = 0.0
    tokens_revoked: bool = False
    # Handle the request (a create happens), then close the connection
    # without answering: the client never learns what it created.
    drop_answer_next: int = 0


FAULT_FIELDS = {f.name: type(f.default) for f in fields(Faults)}


@dataclass(slots=True)
class RequestRecord:
    """One request-log entry; ``status`` is None while in flight or when hung."""

    method: str
    path: str
    query: str
    time: float
    kind: str
    status: int | None = None


@dataclass(slots=True)
class _Plan:
    latency: float = 0.0
    hang_seconds: float | None = None
    fail_status: int | None = None
    retry_after: int | None = None
    drop_answer: bool = False


# ---------------------------------------------------------------------- simulator


class SimulatorServer(ABC):
    """Base of every provider simulator; see the module docstring for the control surface.

    Subclasses set the class attributes below, register routes in
    ``add_routes`` and implement ``error_body``, ``extract_token`` and
    ``seed_run``. API handlers run with the simulator lock held; a streamed
    response's generator runs without it and must take it itself.
    """

    provider: ClassVar[str] = "base"
    default_token: ClassVar[str] = ""
    default_options: ClassVar[dict[str, Any]] = {}
    # What the runner (``python -m connectors.simulators``), the demo and the
    # tests need to point the provider's adapter at this simulator: the port
    # the runner binds by default, the adapter's credential field that takes
    # ``default_token``, and adapter settings that make a working demo.
    default_port: ClassVar[int] = 0
    token_field: ClassVar[str] = ""
    demo_settings: ClassVar[dict[str, Any]] = {}

    QUEUED_STATE: ClassVar[str | None] = None
    RUNNING_STATE: ClassVar[str] = "running"
    SUCCESS_STATE: ClassVar[str] = "success"
    FAILURE_STATE: ClassVar[str] = "failure"
    TERMINAL_STATES: ClassVar[frozenset[str]] = frozenset()
    STATE_ALIASES: ClassVar[dict[str, str]] = {}
    QUEUED_SECONDS: ClassVar[float] = 0.5
    RUNNING_SECONDS: ClassVar[float] = 2.0
    SLOW_RUNNING_SECONDS: ClassVar[float] = 20.0

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        latency_ms: float = 0.0,
        tokens: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self._address = (host, port)
        self._tokens = frozenset(tokens if tokens is not None else [self.default_token])
        self._baseline_faults = Faults(latency_ms=latency_ms)
        self._lock = threading.RLock()
        self._release = threading.Event()
        self._secret = secrets.token_bytes(16)
        self._sequence = 0
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._router = Router()
        self._add_control_routes()
        self.add_routes(self._router)
        self._reset_state()

    @classmethod
    def demo_credentials(cls) -> dict[str, str]:
        """Adapter credentials this simulator accepts (``{token_field: default_token}``)."""
        return {cls.token_field: cls.default_token}

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> Self:
        """Bind (port 0 picks a free one) and serve on a background daemon thread."""
        if self._httpd is None:
            self._release = threading.Event()
            self._httpd = _HTTPServer(self._address, self)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                # stop() waits up to one poll interval: keep it short, tests stop many servers.
                kwargs={"poll_interval": 0.02},
                name=f"{self.provider}-simulator",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release hung requests and open streams, close the socket."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._release.set()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{self.provider} simulator is not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8701`` (no trailing slash)."""
        return f"http://{self._address[0]}:{self.port}"

    # -- provider hooks ------------------------------------------------------------

    @abstractmethod
    def add_routes(self, router: Router) -> None:
        """Register the provider's API (and extra control/blob) routes."""

    def reset_provider_state(self) -> None:  # noqa: B027 - optional hook, empty by default
        """(Re)create provider-specific state; called at start-up and on reset."""

    @abstractmethod
    def error_body(self, status: int, code: str, message: str) -> Any:
        """The provider's JSON error body."""

    @abstractmethod
    def extract_token(self, request: SimRequest) -> str | None:
        """The credential in the request, or None when there is none."""

    @abstractmethod
    def seed_run(self, steps: list[Step], now: float, **attrs: Any) -> SimRun:
        """Create and store one run following ``steps`` (``attrs`` from the seed body)."""

    def unauthorized_response(self, request: SimRequest) -> Response:
        return self.error_response(401, "unauthorized", "Invalid API key")

    def rate_limited_response(self, retry_after: int) -> Response:
        response = self.error_response(429, "rate_limit_exceeded", "Rate limit exceeded")
        response.headers["Retry-After"] = str(retry_after)
        return response

    def unavailable_response(self, status: int) -> Response:
        return self.error_response(status, "internal_error", "Service unavailable")

    def finalize_api_response(self, response: Response, request: SimRequest) -> Response:
        """Last touch on every API answer (e.g. GitHub's rate-limit headers and
        conditional answers)."""
        return response

    def refuse_api_request(self, request: SimRequest) -> Response | None:
        """An answer that replaces the handler's for an authenticated request
        (e.g. GitHub's 403 once the hour's quota is spent); None to go on."""
        return None

    def is_terminal(self, state: str) -> bool:
        return state in self.TERMINAL_STATES

    # -- helpers for providers -----------------------------------------------------

    def error_response(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        return Response.json(status, self.error_body(status, code, message), headers)

    def now(self) -> float:
        return self.clock()

    def next_sequence(self) -> int:
        """Monotonic per server, never reset (ids stay unique across ``reset``)."""
        with self._lock:
            self._sequence += 1
            return self._sequence

    def count_creation(self) -> None:
        self._creations += 1

    def add_run(self, run: SimRun) -> SimRun:
        self._runs[run.id] = run
        return run

    def find_run(self, run_id: str) -> SimRun | None:
        """The run, synced to now; None when unknown or vanished. Lock held."""
        run = self._runs.get(run_id)
        if run is None or run.vanished:
            return None
        run.sync(self.now())
        return run

    def human_page(self, path: str) -> Response:
        """The simulator's web page for the run a link points at: the last
        path segment is the run's id (or its agent's, or the id without its
        prefix). Unknown runs get a 404 page; nothing here needs a token."""
        name = type(self).__name__.removesuffix("Simulator")
        segment = path.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            found = next(
                (
                    run
                    for run in self.iter_runs()
                    if segment
                    and (
                        str(run.id) == segment
                        or str(run.id).endswith("-" + segment)
                        or getattr(run, "agent_id", None) == segment
                    )
                ),
                None,
            )
            snapshot = found.snapshot() if found is not None else None
        if snapshot is None:
            body = f"<h1>Simulated {html.escape(name)}</h1><p>No run at {html.escape(path)}.</p>"
            return Response.text(404, _page(name, body), "text/html; charset=utf-8")
        history = "".join(
            f"<li>{html.escape(entry['at'])}: {html.escape(entry['state'])}</li>"
            for entry in snapshot["history"]
        )
        body = (
            f"<h1>Simulated {html.escape(name)} run {html.escape(str(snapshot['id']))}</h1>"
            f"<p>State: <strong>{html.escape(snapshot['state'])}</strong></p>"
            f"<h2>History</h2><ul>{history}</ul>"
            "<p>This page stands in for the provider's own web page in the CCDash demo. "
            "Control endpoints: <code>/_sim/faults</code>, "
            "<code>/_sim/runs/{id}/advance</code>.</p>"
        )
        return Response.text(200, _page(name, body), "text/html; charset=utf-8")

    def iter_runs(self) -> Iterator[SimRun]:
        """Live (not vanished) runs, synced to now. Lock held."""
        now = self.now()
        for run in self._runs.values():
            if not run.vanished:
                run.sync(now)
                yield run

    def script_for(self, text: str) -> list[Step]:
        """The script a new run follows, picked by the markers in ``text``."""
        if MARKER_HOLD in text:
            running = HOLD
        elif MARKER_SLOW in text:
            running = self.SLOW_RUNNING_SECONDS
        else:
            running = self.RUNNING_SECONDS
        end = self.FAILURE_STATE if MARKER_FAIL in text else self.SUCCESS_STATE
        steps = [Step(self.RUNNING_STATE, running), Step(end)]
        if self.QUEUED_STATE is not None:
            steps.insert(0, Step(self.QUEUED_STATE, self.QUEUED_SECONDS))
        return steps

    def presign(self, path: str, ttl: float) -> str:
        """A short-lived signed URL to a blob path served by this simulator."""
        expires = int(self.now() + ttl)
        return f"{self.url}{path}?expires={expires}&sig={self._signature(path, expires)}"

    def presigned_ok(self, request: SimRequest) -> bool:
        """True when the request carries a valid, unexpired signature for its path."""
        try:
            expires = int(request.arg("expires") or "")
        except ValueError:
            return False
        signature = self._signature(request.path, expires)
        return self.now() <= expires and hmac.compare_digest(request.arg("sig") or "", signature)

    def _signature(self, path: str, expires: int) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def wait_released(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a reset or stop releases waiters."""
        return self._release.wait(seconds)

    # -- in-process control API ----------------------------------------------------

    def reset(self) -> None:
        """Back to the start state; in-flight hangs and streams are released."""
        with self._lock:
            released, self._release = self._release, threading.Event()
            self._reset_state()
        released.set()

    def update_faults(self, **changes: Any) -> Faults:
        """Set any ``Faults`` fields; returns a copy of the faults now in force."""
        unknown = set(changes) - set(FAULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        coerced = {name: FAULT_FIELDS[name](value) for name, value in changes.items()}
        with self._lock:
            self._faults = replace(self._faults, **coerced)
            return replace(self._faults)

    def faults(self) -> Faults:
        with self._lock:
            return replace(self._faults)

    def clear_faults(self) -> None:
        """Back to the faults the server was constructed with (its baseline latency)."""
        with self._lock:
            self._faults = replace(self._baseline_faults)

    def set_latency(self, ms: float) -> None:
        self.update_faults(latency_ms=ms)

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        self.update_faults(fail_next=count, fail_status=status)

    def rate_limit_next(self, count: int = 1, retry_after: int = 1) -> None:
        self.update_faults(rate_limit_next=count, retry_after=retry_after)

    def hang_next(self, seconds: float, count: int = 1) -> None:
        self.update_faults(hang_next=count, hang_seconds=seconds)

    def drop_answer_next(self, count: int = 1) -> None:
        """The next ``count`` API requests are handled but never answered."""
        self.update_faults(drop_answer_next=count)

    def revoke_tokens(self) -> None:
        """Every credential is rejected (provider-shaped 401) until reset/clear_faults."""
        self.update_faults(tokens_revoked=True)

    def configure(self, **options: Any) -> dict[str, Any]:
        """Set provider options (see the provider's ``default_options``)."""
        unknown = set(options) - set(self.default_options)
        if unknown:
            raise ValueError(f"unknown options: {sorted(unknown)}")
        with self._lock:
            self.options.update(options)
            return dict(self.options)

    def seed(self, count: int, state: str = "running", **attrs: Any) -> list[str]:
        """Create ``count`` runs at ``state`` quickly; they hold it until advanced.

        ``state`` is a native state or an alias (queued, running, succeeded,
        failed, canceled). Seeding does not count as a creation.
        """
        if not 0 < count <= SEED_LIMIT:
            raise ValueError(f"count must be between 1 and {SEED_LIMIT}")
        native = self.STATE_ALIASES.get(state, state)
        steps = self._seed_steps(native)
        with self._lock:
            now = self.now()
            return [self.seed_run(list(steps), now, **attrs).id for _ in range(count)]

    def advance(self, run_id: str | int) -> str:
        """Move the run to its next scripted step now; returns the state it is in."""
        with self._lock:
            run = self._control_run(run_id)
            run.advance(self.now())
            return run.state

    def set_state(self, run_id: str | int, state: str) -> None:
        """Put the run in ``state`` now and hold it there (any value, even unknown ones)."""
        with self._lock:
            self._control_run(run_id).force(state, self.now())

    def vanish(self, run_id: str | int) -> None:
        """The run answers 404 from now on."""
        with self._lock:
            self._control_run(run_id).vanished = True

    def state_of(self, run_id: str | int) -> str:
        with self._lock:
            return self._control_run(run_id).state

    def run_snapshot(self, run_id: str | int) -> dict[str, Any]:
        with self._lock:
            return self._control_run(run_id).snapshot()

    def request_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Logged API requests, oldest first (never a header value)."""
        with self._lock:
            records = list(self._log)
        if limit is not None:
            records = records[-limit:] if limit > 0 else []
        return [asdict(record) for record in records]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "provider": self.provider,
                "creations": self._creations,
                "runs": len(self._runs),
                "requests": dict(self._kinds),
                "totalRequests": sum(self._kinds.values()),
            }

    # -- internals -----------------------------------------------------------------

    def _reset_state(self) -> None:
        with self._lock:
            self._runs: dict[str, SimRun] = {}
            self._faults = replace(self._baseline_faults)
            self.options: dict[str, Any] = dict(self.default_options)
            self._log: deque[RequestRecord] = deque(maxlen=LOG_CAPACITY)
            self._kinds: Counter[str] = Counter()
            self._creations = 0
            self.reset_provider_state()

    def _control_run(self, run_id: str | int) -> SimRun:
        run = self._runs.get(str(run_id))
        if run is None:
            raise KeyError(f"unknown run {run_id}")
        run.sync(self.now())
        return run

    def _seed_steps(self, native: str) -> list[Step]:
        if self.is_terminal(native):
            return [Step(native)]
        script = self.script_for("")
        states = [step.state for step in script]
        tail = (
            script[states.index(native) + 1 :] if native in states else [Step(self.SUCCESS_STATE)]
        )
        return [Step(native), *tail]

    def serve_request(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one HTTP request (called by the request handler thread)."""
        try:
            request = self._parse(handler)
        except ValueError:
            handler.close_connection = True  # the unread body would poison keep-alive
            self._write(handler, Response.json(400, {"error": "malformed request"}))
            return
        matched = self._router.match(request.method, request.path)
        route = matched[0] if matched else None
        request.params = matched[1] if matched else {}
        if route is not None and not route.api:
            self._write(handler, self._call(route, request))
            return
        if (
            route is None
            and request.method == "GET"
            and "text/html" in (request.header("Accept") or "")
        ):
            # A browser following a run's web link (providerUrl): a page for
            # people, never an API error.
            self._write(handler, self.human_page(request.path))
            return
        record, plan = self._admit(request, route.kind if route else "unmatched")
        if plan.latency:
            time.sleep(plan.latency)
        if plan.hang_seconds is not None:
            # Accept the request, never answer: the client sees a read timeout,
            # or a connection closed without a response after hang_seconds.
            self.wait_released(plan.hang_seconds)
            handler.close_connection = True
            return
        response = self.finalize_api_response(self._api_response(request, route, plan), request)
        record.status = response.status
        if plan.drop_answer:
            handler.close_connection = True  # handled, never answered
            return
        self._write(handler, response)

    def _parse(self, handler: BaseHTTPRequestHandler) -> SimRequest:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        return SimRequest(
            method=handler.command,
            path=split.path,
            raw_query=split.query,
            query=parse_qs(split.query, keep_blank_values=True),
            headers=handler.headers,
            body=body,
        )

    def _admit(self, request: SimRequest, kind: str) -> tuple[RequestRecord, _Plan]:
        """Log and count the request, and consume at most one next-N fault for it."""
        with self._lock:
            record = RequestRecord(
                request.method, request.path, request.raw_query, self.now(), kind
            )
            self._log.append(record)
            self._kinds[kind] += 1
            faults = self._faults
            plan = _Plan(latency=faults.latency_ms / 1000.0)
            if faults.hang_next > 0:
                faults.hang_next -= 1
                plan.hang_seconds = faults.hang_seconds
            elif faults.fail_next > 0:
                faults.fail_next -= 1
                plan.fail_status = faults.fail_status
            elif faults.rate_limit_next > 0:
                faults.rate_limit_next -= 1
                plan.retry_after = faults.retry_after
            elif faults.drop_answer_next > 0:
                faults.drop_answer_next -= 1
                plan.drop_answer = True
            return record, plan

    def _api_response(self, request: SimRequest, route: Route | None, plan: _Plan) -> Response:
        if plan.fail_status is not None:
            return self.unavailable_response(plan.fail_status)
        if plan.retry_after is not None:
            return self.rate_limited_response(plan.retry_after)
        if not self._authorized(request):
            return self.unauthorized_response(request)
        refused = self.refuse_api_request(request)
        if refused is not None:
            return refused
        if route is None:
            return self.error_response(404, "not_found", "Not Found")
        return self._call(route, request)

    def _authorized(self, request: SimRequest) -> bool:
        with self._lock:
            if self._faults.tokens_revoked:
                return False
        return self.extract_token(request) in self._tokens

    def _call(self, route: Route, request: SimRequest) -> Response:
        try:
            with self._lock:
                return route.handler(request)
        except SimError as error:
            if not route.api:
                return Response.json(error.status, {"error": error.message})
            body = (
                error.body
                if error.body is not None
                else self.error_body(error.status, error.code, error.message)
            )
            return Response.json(error.status, body, error.headers)
        except Exception:
            logger.exception("%s simulator: handler %s failed", self.provider, route.kind)
            return self.error_response(500, "internal_error", "Internal simulator error")

    def _write(self, handler: BaseHTTPRequestHandler, response: Response) -> None:
        try:
            handler.send_response(response.status)
            for name, value in response.headers.items():
                handler.send_header(name, value)
            if response.stream is not None:
                handler.send_header("Connection", "close")
                handler.close_connection = True
                handler.end_headers()
                handler.wfile.flush()
                for chunk in response.stream():
                    handler.wfile.write(chunk)
                    handler.wfile.flush()
                return
            if response.status not in (204, 304):
                handler.send_header("Content-Length", str(len(response.body)))
            handler.end_headers()
            if response.body:
                handler.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            handler.close_connection = True  # the client went away; nothing to answer

    # -- /_sim/ control routes -------------------------------------------------------

    def _add_control_routes(self) -> None:
        add = self._router.add
        add("GET", "/_sim/stats", lambda r: Response.json(200, self.stats()), "_sim", api=False)
        add("GET", "/_sim/requests", self._http_requests, "_sim", api=False)
        add(
            "GET",
            "/_sim/faults",
            lambda r: Response.json(200, asdict(self.faults())),
            "_sim",
            api=False,
        )
        add("POST", "/_sim/faults", self._http_set_faults, "_sim", api=False)
        add("DELETE", "/_sim/faults", self._http_clear_faults, "_sim", api=False)
        add(
            "GET",
            "/_sim/options",
            lambda r: Response.json(200, dict(self.options)),
            "_sim",
            api=False,
        )
        add("POST", "/_sim/options", self._http_set_options, "_sim", api=False)
        add("POST", "/_sim/reset", self._http_reset, "_sim", api=False)
        add("POST", "/_sim/seed", self._http_seed, "_sim", api=False)
        add("GET", "/_sim/runs/{run_id}", self._http_run, "_sim", api=False)
        add("POST", "/_sim/runs/{run_id}/advance", self._http_advance, "_sim", api=False)
        add("POST", "/_sim/runs/{run_id}/state", self._http_set_state, "_sim", api=False)
        add("POST", "/_sim/runs/{run_id}/vanish", self._http_vanish, "_sim", api=False)

    def _http_requests(self, request: SimRequest) -> Response:
        limit = request.int_arg("limit", 1000, low=0, high=LOG_CAPACITY)
        return Response.json(200, {"items": self.request_log(limit)})

    def _http_set_faults(self, request: SimRequest) -> Response:
        try:
            return Response.json(200, asdict(self.update_faults(**request.json_object())))
        except (TypeError, ValueError) as error:
            raise SimError(400, "bad_request", str(error)) from None

    def _http_clear_faults(self, request: SimRequest) -> Response:
        self.clear_faults()
        return Response.json(200, asdict(self.faults()))

    def _http_set_options(self, request: SimRequest) -> Response:
        try:
            return Response.json(200, self.configure(**request.json_object()))
        except ValueError as error:
            raise SimError(400, "bad_request", str(error)) from None

    def _http_reset(self, request: SimRequest) -> Response:
        self.reset()
        return Response.json(200, {"reset": True})

    def _http_seed(self, request: SimRequest) -> Response:
        body = request.json_object()
        count = body.pop("count", 1)
        state = body.pop("state", "running")
        try:
            ids = self.seed(int(count), str(state), **body)
        except (TypeError, ValueError) as error:
            raise SimError(400, "bad_request", str(error)) from None
        return Response.json(201, {"count": len(ids), "ids": ids})

    def _http_run(self, request: SimRequest) -> Response:
        return Response.json(200, self._control(self.run_snapshot, request))

    def _http_advance(self, request: SimRequest) -> Response:
        self._control(self.advance, request)
        return Response.json(200, self._control(self.run_snapshot, request))

    def _http_set_state(self, request: SimRequest) -> Response:
        state = request.json_object().get("state")
        if not isinstance(state, str) or not state:
            raise SimError(400, "bad_request", 'body must be {"state": "<native state>"}')
        self._control(lambda run_id: self.set_state(run_id, state), request)
        return Response.json(200, self._control(self.run_snapshot, request))

    def _http_vanish(self, request: SimRequest) -> Response:
        self._control(self.vanish, request)
        return Response.json(200, {"id": request.params["run_id"], "vanished": True})

    @staticmethod
    def _control(action: Callable[[str], Any], request: SimRequest) -> Any:
        try:
            return action(request.params["run_id"])
        except KeyError as error:
            raise SimError(404, "not_found", str(error.args[0])) from None
