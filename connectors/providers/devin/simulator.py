"""Devin API v1 simulator.

Reference: https://docs.devin.ai/api-reference/v1/sessions (create, retrieve,
list, terminate). Auth ``Authorization: Bearer <key>``; the default key is
``sim-devin-key``. Errors are FastAPI-shaped ``{"detail": ...}``. The vendor
labels v1 alpha; this simulator keeps to the documented fields.

- ``POST /v1/sessions`` ``{"prompt", "idempotent", "title", "tags"}`` ->
  ``200 {"session_id", "url", "is_new_session"}``. With ``idempotent: true``
  and the prompt of an existing session, that session comes back with
  ``is_new_session: false`` and no creation is counted (the only provider-side
  dedupe among our providers). 422 (FastAPI validation shape) without a
  string ``prompt``.
- ``GET /v1/sessions/{id}`` -> ``session_id``, ``status``,
  ``status_enum``, ``title``, ``tags``, ``created_at``, ``updated_at``,
  ``snapshot_id``, ``playbook_id``, ``messages[]``, ``pull_request``,
  ``structured_output``. ``messages`` grow while the session works (one per
  second of work, capped); each has a stable ``event_id``, ``timestamp``,
  ``type`` (``initial_user_message`` or ``devin_message``) and ``message``.
  ``pull_request`` (``{"url"}``) and ``structured_output`` appear once
  finished. The real ``status`` strings are undocumented; the simulator
  mirrors ``status_enum`` there. Session objects and list items have no
  ``url`` (only the create answer has one).
- ``GET /v1/sessions?limit=&offset=&tags=`` -> ``{"sessions": [...]}``, newest
  first, without messages.
- ``DELETE /v1/sessions/{id}`` -> ``200 {"detail": "Session terminated"}``. The
  real terminal value after DELETE is unconfirmed: the session's
  ``status_enum`` becomes option ``terminated_status_enum`` (default
  ``"expired"``, a documented enum value; set ``"stopped"`` to play an
  undocumented one). DELETE on a session that already ended (finished,
  expired or terminated) answers option ``ended_delete_status`` (default
  409) ``{"detail": "Session ... has already ended"}`` — also unconfirmed.

- ``POST /v1/sessions/{id}/message`` ``{"message"}`` -> ``200 {"detail":
  "Message sent"}`` (the documented ``MessageSentResponse``). The message joins
  the transcript as a ``user_message``. A ``blocked`` session, or one that
  ``finished``, works again at once on a script picked by the message's
  markers (then finishes, or fails with ``[sim:fail]``); a working session
  just takes the message. A session that ended for good (expired or
  terminated) answers option ``ended_message_status`` (default 409)
  ``{"detail": "Session ... has ended ..."}`` — the real answer is
  unconfirmed. 422 without a string ``message``.

States: ``working`` (running), ``blocked`` (waits for the user; not terminal),
``finished``, ``expired`` (terminal) and the ``suspend_*``/``resume_*`` values
reachable with ``set_state``. There is no queued state. ``[sim:fail]`` ends in
``expired``; ``[sim:block]`` makes the session ``blocked`` for 3 s after 1 s
of work, then it works on. No rate-limit headers are documented; the 429
fault sends ``Retry-After`` only. Seed attributes: ``prompt``, ``tags``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

from connectors.simulators.base import (
    Response,
    Router,
    SimError,
    SimRequest,
    SimRun,
    SimulatorServer,
    Step,
    iso,
)

MARKER_BLOCK = "[sim:block]"
BLOCK_AFTER_SECONDS = 1.0
BLOCKED_SECONDS = 3.0
MESSAGE_SECONDS = 1.0
MESSAGE_LIMIT = 20
WORKING_STATES = ("working", "resumed")


@dataclass(eq=False, kw_only=True)
class DevinSession(SimRun):
    prompt: str
    title: str
    tags: list[str] = field(default_factory=list)
    terminated: bool = False
    # (sent_at, text) of each message sent to the session after its creation.
    user_messages: list[tuple[float, str]] = field(default_factory=list)


def _iso(timestamp: float) -> str:
    return iso(timestamp, millis=True)


def _default_title(prompt: str) -> str:
    lines = prompt.strip().splitlines()
    return lines[0][:80] if lines else "Untitled session"


class DevinSimulator(SimulatorServer):
    """Stand-in for the Devin API v1 (see the module docstring)."""

    provider = "devin"
    default_token = "sim-devin-key"
    default_port = 8703
    token_field = "apiKey"
    demo_settings: ClassVar[dict[str, Any]] = {}
    default_options: ClassVar[dict[str, Any]] = {
        "terminated_status_enum": "expired",
        "ended_delete_status": 409,
        "ended_message_status": 409,
    }
    RUNNING_STATE = "working"
    SUCCESS_STATE = "finished"
    FAILURE_STATE = "expired"
    TERMINAL_STATES = frozenset({"finished", "expired"})
    STATE_ALIASES: ClassVar[dict[str, str]] = {
        "queued": "working",
        "running": "working",
        "waiting": "blocked",
        "succeeded": "finished",
        "failed": "expired",
    }

    def add_routes(self, router: Router) -> None:
        router.add("POST", "/v1/sessions", self._create, "create_session")
        router.add("GET", "/v1/sessions", self._list, "list_sessions")
        router.add("GET", "/v1/sessions/{session_id}", self._get, "get_session")
        router.add("DELETE", "/v1/sessions/{session_id}", self._delete, "terminate_session")
        router.add("POST", "/v1/sessions/{session_id}/message", self._message, "send_message")

    # -- provider hooks --------------------------------------------------------------

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        return {"detail": message}

    def extract_token(self, request: SimRequest) -> str | None:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    def unauthorized_response(self, request: SimRequest) -> Response:
        if request.header("Authorization") is None:
            return self.error_response(401, "unauthorized", "Not authenticated")
        return self.error_response(401, "unauthorized", "Invalid API key")

    def is_terminal(self, state: str) -> bool:
        return state in self.TERMINAL_STATES or state == self.options["terminated_status_enum"]

    def script_for(self, text: str) -> list[Step]:
        steps = super().script_for(text)
        if MARKER_BLOCK in text:
            steps = [
                Step(self.RUNNING_STATE, BLOCK_AFTER_SECONDS),
                Step("blocked", BLOCKED_SECONDS),
                *steps,
            ]
        return steps

    def seed_run(
        self,
        steps: list[Step],
        now: float,
        *,
        prompt: str = "seeded session",
        tags: list[str] | None = None,
    ) -> SimRun:
        return self._new_session(prompt, None, tags or [], steps, now)

    # -- endpoints -----------------------------------------------------------------------

    def _create(self, request: SimRequest) -> Response:
        """Create a session, or return the existing one for an idempotent repeat."""
        body = request.json_object()
        prompt, title, tags = self._create_arguments(body)
        if body.get("idempotent") is True:
            existing = next((s for s in self._sessions() if s.prompt == prompt), None)
            if existing is not None:
                return Response.json(200, self._created_json(existing, is_new=False))
        session = self._new_session(prompt, title, tags, self.script_for(prompt), self.now())
        self.count_creation()
        return Response.json(200, self._created_json(session, is_new=True))

    @staticmethod
    def _create_arguments(body: dict[str, Any]) -> tuple[str, str | None, list[str]]:
        prompt, title, tags = body.get("prompt"), body.get("title"), body.get("tags") or []
        problems = []
        if "prompt" not in body:
            problems.append(("prompt", "Field required", "missing"))
        elif not isinstance(prompt, str):
            problems.append(("prompt", "Input should be a valid string", "string_type"))
        if title is not None and not isinstance(title, str):
            problems.append(("title", "Input should be a valid string", "string_type"))
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            problems.append(("tags", "Input should be a valid list of strings", "list_type"))
        if problems:
            detail = [
                {"loc": ["body", name], "msg": msg, "type": kind} for name, msg, kind in problems
            ]
            raise SimError(422, "validation_error", "Validation error", body={"detail": detail})
        return str(prompt), title, list(tags)

    def _new_session(
        self, prompt: str, title: str | None, tags: list[str], steps: list[Step], now: float
    ) -> DevinSession:
        session = DevinSession(
            id=f"devin-{uuid.uuid4().hex}",
            steps=steps,
            created_at=now,
            prompt=prompt,
            title=title or _default_title(prompt),
            tags=list(tags),
        )
        self.add_run(session)
        return session

    def _sessions(self) -> list[DevinSession]:
        return [run for run in self.iter_runs() if isinstance(run, DevinSession)]

    def _session(self, request: SimRequest) -> DevinSession:
        session = self.find_run(request.params["session_id"])
        if not isinstance(session, DevinSession):
            raise SimError(404, "not_found", "Session not found")
        return session

    def _get(self, request: SimRequest) -> Response:
        session = self._session(request)
        return Response.json(
            200, {**self._session_json(session), "messages": self._messages(session)}
        )

    def _list(self, request: SimRequest) -> Response:
        limit = request.int_arg("limit", 100, high=1000)
        offset = request.int_arg("offset", 0, low=0, high=10**9)
        wanted_tags = set(request.query.get("tags", []))
        sessions = [s for s in self._sessions() if wanted_tags <= set(s.tags)]
        sessions.sort(key=lambda s: s.created_at, reverse=True)
        page = sessions[offset : offset + limit]
        return Response.json(200, {"sessions": [self._session_json(s) for s in page]})

    def _delete(self, request: SimRequest) -> Response:
        """Terminate the session (cannot be resumed); see the module docstring for the choices."""
        session = self._session(request)
        if session.terminated or self.is_terminal(session.state):
            raise SimError(
                int(self.options["ended_delete_status"]),
                "session_ended",
                f"Session {session.id} has already ended",
            )
        session.terminated = True
        session.force(str(self.options["terminated_status_enum"]), self.now())
        return Response.json(200, {"detail": "Session terminated"})

    def _message(self, request: SimRequest) -> Response:
        """A message from the user: wakes a blocked or finished session."""
        session = self._session(request)
        text = request.json_object().get("message")
        if not isinstance(text, str):
            detail = [{"loc": ["body", "message"], "msg": "Field required", "type": "missing"}]
            raise SimError(422, "validation_error", "Validation error", body={"detail": detail})
        if session.terminated or session.state in (
            "expired",
            self.options["terminated_status_enum"],
        ):
            raise SimError(
                int(self.options["ended_message_status"]),
                "session_ended",
                f"Session {session.id} has ended and cannot receive messages",
            )
        now = self.now()
        session.user_messages.append((now, text))
        if session.state in ("blocked", "finished"):
            session.reschedule(now, 0.0, self.script_for(text))
        return Response.json(200, {"detail": "Message sent"})

    # -- rendering ------------------------------------------------------------------------

    def _created_json(self, session: DevinSession, *, is_new: bool) -> dict[str, Any]:
        return {
            "session_id": session.id,
            "url": self._session_url(session),
            "is_new_session": is_new,
        }

    def _session_url(self, session: DevinSession) -> str:
        return f"{self.url}/sessions/{session.id.removeprefix('devin-')}"

    def _session_json(self, session: DevinSession) -> dict[str, Any]:
        finished = session.state == "finished"
        return {
            "session_id": session.id,
            "status": session.state,
            "status_enum": session.state,
            "title": session.title,
            "tags": session.tags,
            "created_at": _iso(session.created_at),
            "updated_at": _iso(session.updated_at),
            "snapshot_id": None,
            "playbook_id": None,
            "pull_request": {"url": self._pull_request_url(session)} if finished else None,
            "structured_output": {"summary": f"Completed: {session.title}"} if finished else None,
        }

    def _pull_request_url(self, session: DevinSession) -> str:
        return f"{self.url}/sim-org/sim-repo/pull/{session.id[-6:]}"

    def _messages(self, session: DevinSession) -> list[dict[str, Any]]:
        """The transcript so far, derived from the history: stable ids, grows at the end."""
        entries: list[tuple[float, str, str]] = [
            (session.created_at, "initial_user_message", session.prompt)
        ]
        ticks = session.ticks(WORKING_STATES, MESSAGE_SECONDS, MESSAGE_LIMIT, self.now())
        entries += [
            (t, "devin_message", f"Working on it (update {n}).") for n, t in enumerate(ticks, 1)
        ]
        entries += [(at, "user_message", text) for at, text in session.user_messages]
        for state, entered_at in session.history:
            if state == "blocked":
                entries.append(
                    (entered_at, "devin_message", "I need your input before I continue.")
                )
            elif state == "finished":
                pr = self._pull_request_url(session)
                entries.append(
                    (entered_at, "devin_message", f"Done. I opened a pull request: {pr}")
                )
        entries.sort(key=lambda entry: entry[0])
        messages = []
        for number, (at, kind, text) in enumerate(entries):
            message = {
                "event_id": f"{session.id}-m{number}",
                "type": kind,
                "message": text,
                "timestamp": _iso(at),
            }
            if kind == "initial_user_message":
                message |= {"origin": "api", "username": "sim-user"}
            messages.append(message)
        return messages


SIMULATOR = DevinSimulator
