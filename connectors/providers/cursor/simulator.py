"""Cursor Cloud Agents API v1 simulator.

Reference: https://cursor.com/docs/cloud-agent/api/endpoints and the official
``cloud-agents-openapi.yaml``. Auth: Basic with the API key as user name and an
empty password, or ``Bearer <key>``; the default key is ``sim-cursor-key``.
Errors are ``{"error": {"code", "message"}}``; a 429 carries ``Retry-After``
and ``X-RateLimit-Limit/Remaining/Reset``.

Model: a durable agent, one run per prompt. Run statuses ``CREATING``,
``RUNNING``, ``FINISHED``, ``ERROR``, ``CANCELLED``, ``EXPIRED`` (the last four
terminal). Control endpoints address runs by their ``run-…`` id.

- ``GET /v1/me``: ``{"apiKeyName", "createdAt", "userEmail"}`` — the real API's
  key check.
- ``POST /v1/agents`` ``{"prompt": {"text"}, "repos": [{"url", "startingRef"}],
  "branchName", "autoCreatePR", "model"}``: ``201 {"agent": {..., "latestRunId"},
  "run": {"id", "agentId", "status": "CREATING", "createdAt", "updatedAt"}}``;
  400 ``validation_error`` without ``prompt.text``.
- ``GET /v1/agents?limit=&cursor=``: ``{"items", "nextCursor"}``, newest first;
  items are ``AgentSummary``: exactly ``id, name, status (ACTIVE|ARCHIVED),
  env, url, createdAt, updatedAt, latestRunId`` (no ``branchName``, no
  ``repos``).
- ``GET /v1/agents/{id}``: the full ``Agent`` (``repos``, ``branchName``,
  ``autoCreatePR``, ``model`` too; execution state lives on runs).
- ``POST /v1/agents/{id}/runs`` ``{"prompt": {"text"}}``: follow-up run,
  ``201 {"agent", "run"}``; ``409 agent_busy`` while a run is active.
- ``GET /v1/agents/{id}/runs/{runId}``: the run; ``404 agent_not_found`` /
  ``run_not_found``.
- ``POST /v1/agents/{id}/runs/{runId}/cancel``: ``200 {"id"}``, the run is
  ``CANCELLED`` at once; a terminal run answers ``409 run_not_cancellable``.
- ``GET /v1/agents/{id}/runs/{runId}/stream``: Server-Sent Events (``status``,
  ``thinking``, ``assistant``, ``tool_call``, ``result``, ``error``, ``done``
  with ``id:`` lines; ``heartbeat`` without an id). Resumable with
  ``Last-Event-ID``. A still-active run gets what exists so far, then new
  events and heartbeats, and the stream closes when the run ends or after
  option ``stream_max_seconds`` (default 2 s) so pollers are never stuck.
  Option ``stream_retention_seconds`` (default None: forever): a run that
  ended longer ago answers ``410 stream_expired``. A ``Last-Event-ID`` that
  names no event of the run answers ``400 invalid_last_event_id``; option
  ``stream_unavailable_next`` (a count) answers ``503 stream_unavailable``.
- ``GET /v1/agents/{id}/artifacts``: ``{"items": [{"path", "sizeBytes",
  "updatedAt"}]}`` (≤100); one summary artifact once the latest run finished.
  The v1 list key is not confirmed; ``items`` follows the agents list.

Seed attributes: ``prompt``, ``branch_name``; each seeded run gets its own agent.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterator
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

TERMINAL = frozenset({"FINISHED", "ERROR", "CANCELLED", "EXPIRED"})
EVENT_SECONDS = 0.5
EVENT_LIMIT = 40
STREAM_POLL_SECONDS = 0.05
HEARTBEAT_SECONDS = 0.5
RATE_LIMIT_PER_MINUTE = 60
SUMMARY_ARTIFACT = "artifacts/summary.md"


@dataclass(eq=False)
class CursorAgent:
    id: str
    name: str
    repos: list[dict[str, Any]]
    branch_name: str
    auto_create_pr: bool
    model: dict[str, Any] | None
    created_at: float
    run_ids: list[str] = field(default_factory=list)


@dataclass(eq=False, kw_only=True)
class CursorRun(SimRun):
    agent_id: str
    prompt: str


def _iso(timestamp: float) -> str:
    return iso(timestamp, millis=True)


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class CursorSimulator(SimulatorServer):
    """Stand-in for Cursor's Cloud Agents API v1 (see the module docstring)."""

    provider = "cursor"
    default_token = "sim-cursor-key"
    default_port = 8702
    token_field = "apiKey"
    demo_settings: ClassVar[dict[str, Any]] = {
        "repository": "https://github.com/ccdash/demo",
        "startingRef": "main",
    }
    default_options: ClassVar[dict[str, Any]] = {
        "stream_max_seconds": 2.0,
        "stream_retention_seconds": None,
        "stream_unavailable_next": 0,
    }
    QUEUED_STATE = "CREATING"
    RUNNING_STATE = "RUNNING"
    SUCCESS_STATE = "FINISHED"
    FAILURE_STATE = "ERROR"
    TERMINAL_STATES = TERMINAL
    STATE_ALIASES: ClassVar[dict[str, str]] = {
        "queued": "CREATING",
        "running": "RUNNING",
        "succeeded": "FINISHED",
        "failed": "ERROR",
        "canceled": "CANCELLED",
    }

    def reset_provider_state(self) -> None:
        self._agents: dict[str, CursorAgent] = {}

    def add_routes(self, router: Router) -> None:
        agent = "/v1/agents/{agent_id}"
        run = agent + "/runs/{run_id}"
        router.add("GET", "/v1/me", self._me, "me")
        router.add("POST", "/v1/agents", self._create_agent, "create_agent")
        router.add("GET", "/v1/agents", self._list_agents, "list_agents")
        router.add("GET", agent, self._get_agent, "get_agent")
        router.add("POST", agent + "/runs", self._create_run, "create_run")
        router.add("GET", run, self._get_run, "get_run")
        router.add("POST", run + "/cancel", self._cancel_run, "cancel")
        router.add("GET", run + "/stream", self._stream, "stream")
        router.add("GET", agent + "/artifacts", self._artifacts, "artifacts")

    # -- provider hooks --------------------------------------------------------------

    def error_body(self, status: int, code: str, message: str) -> dict[str, Any]:
        return {"error": {"code": code, "message": message}}

    def extract_token(self, request: SimRequest) -> str | None:
        scheme, _, credentials = (request.header("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer":
            return credentials.strip()
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None
            return decoded.partition(":")[0]
        return None

    def unauthorized_response(self, request: SimRequest) -> Response:
        return self.error_response(401, "unauthorized", "Invalid or missing API key")

    def rate_limited_response(self, retry_after: int) -> Response:
        return self.error_response(
            429,
            "rate_limit_exceeded",
            "Too many requests, retry later",
            {
                "Retry-After": str(retry_after),
                "X-RateLimit-Limit": str(RATE_LIMIT_PER_MINUTE),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(self.now()) + retry_after),
            },
        )

    def seed_run(
        self,
        steps: list[Step],
        now: float,
        *,
        prompt: str = "seeded run",
        branch_name: str | None = None,
    ) -> SimRun:
        agent = self._new_agent(prompt, [], branch_name, False, None, now)
        return self._new_run(agent, prompt, steps, now)

    # -- key and agents ---------------------------------------------------------------------

    def _me(self, request: SimRequest) -> Response:
        return Response.json(
            200,
            {
                "apiKeyName": "simulator key",
                "createdAt": _iso(0),
                "userEmail": "sim@ccdash.invalid",
            },
        )

    def _create_agent(self, request: SimRequest) -> Response:
        """Create an agent and enqueue its first run (201 with both)."""
        body = request.json_object()
        text = self._prompt_text(body)
        repos = body.get("repos") or []
        if not isinstance(repos, list) or not all(
            isinstance(repo, dict) and isinstance(repo.get("url"), str) for repo in repos
        ):
            raise SimError(400, "validation_error", "repos must be a list of {url, startingRef}")
        branch = body.get("branchName")
        if branch is not None and not isinstance(branch, str):
            raise SimError(400, "validation_error", "branchName must be a string")
        now = self.now()
        agent = self._new_agent(
            text, repos, branch, bool(body.get("autoCreatePR", False)), body.get("model"), now
        )
        run = self._new_run(agent, text, self.script_for(text), now)
        self.count_creation()
        return Response.json(201, {"agent": self._agent_json(agent), "run": self._run_json(run)})

    @staticmethod
    def _prompt_text(body: dict[str, Any]) -> str:
        prompt = body.get("prompt")
        text = prompt.get("text") if isinstance(prompt, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise SimError(400, "validation_error", "prompt.text is required")
        return text

    def _new_agent(
        self,
        text: str,
        repos: list[dict[str, Any]],
        branch: str | None,
        auto_create_pr: bool,
        model: dict[str, Any] | None,
        now: float,
    ) -> CursorAgent:
        agent_id = f"bc-{uuid.uuid4()}"
        agent = CursorAgent(
            id=agent_id,
            name=text.strip().splitlines()[0][:80],
            repos=repos,
            branch_name=branch or f"cursor/sim-{agent_id[3:11]}",
            auto_create_pr=auto_create_pr,
            model=model,
            created_at=now,
        )
        self._agents[agent.id] = agent
        return agent

    def _new_run(self, agent: CursorAgent, text: str, steps: list[Step], now: float) -> CursorRun:
        run = CursorRun(
            id=f"run-{uuid.uuid4()}", steps=steps, created_at=now, agent_id=agent.id, prompt=text
        )
        agent.run_ids.append(run.id)
        self.add_run(run)
        return run

    def _list_agents(self, request: SimRequest) -> Response:
        limit = request.int_arg("limit", 20)
        offset = self._decode_cursor(request.arg("cursor"))
        agents = sorted(self._agents.values(), key=lambda agent: agent.created_at, reverse=True)
        page = agents[offset : offset + limit]
        more = offset + limit < len(agents)
        next_cursor = self._encode_cursor(offset + limit) if more else None
        return Response.json(
            200, {"items": [self._summary_json(a) for a in page], "nextCursor": next_cursor}
        )

    @staticmethod
    def _encode_cursor(offset: int) -> str:
        return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()

    @staticmethod
    def _decode_cursor(cursor: str | None) -> int:
        if not cursor:
            return 0
        try:
            decoded = base64.urlsafe_b64decode(cursor.encode()).decode()
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        label, _, offset = decoded.partition(":")
        if label != "offset" or not offset.isdigit():
            raise SimError(400, "validation_error", "Invalid cursor")
        return int(offset)

    def _agent(self, request: SimRequest) -> CursorAgent:
        agent = self._agents.get(request.params["agent_id"])
        if agent is None:
            raise SimError(404, "agent_not_found", "Agent not found")
        return agent

    def _get_agent(self, request: SimRequest) -> Response:
        return Response.json(200, self._agent_json(self._agent(request)))

    def _summary_json(self, agent: CursorAgent) -> dict[str, Any]:
        """``AgentSummary``: what ``GET /v1/agents`` lists, nothing more."""
        latest = self.find_run(agent.run_ids[-1])
        return {
            "id": agent.id,
            "name": agent.name,
            "status": "ACTIVE",
            "env": {"type": "cloud"},
            "url": f"{self.url}/agents/{agent.id}",
            "createdAt": _iso(agent.created_at),
            "updatedAt": _iso(latest.updated_at if latest else agent.created_at),
            "latestRunId": agent.run_ids[-1],
        }

    def _agent_json(self, agent: CursorAgent) -> dict[str, Any]:
        """The full ``Agent`` (``GET /v1/agents/{id}`` and create answers)."""
        return {
            **self._summary_json(agent),
            "repos": agent.repos,
            "branchName": agent.branch_name,
            "autoCreatePR": agent.auto_create_pr,
            "model": agent.model,
        }

    # -- runs ---------------------------------------------------------------------------

    def _create_run(self, request: SimRequest) -> Response:
        """A follow-up prompt: one active run per agent, else 409 agent_busy."""
        agent = self._agent(request)
        text = self._prompt_text(request.json_object())
        latest = self.find_run(agent.run_ids[-1])
        if latest is not None and not self.is_terminal(latest.state):
            raise SimError(409, "agent_busy", "Agent already has an active run")
        run = self._new_run(agent, text, self.script_for(text), self.now())
        self.count_creation()
        return Response.json(201, {"agent": self._agent_json(agent), "run": self._run_json(run)})

    def _run(self, request: SimRequest) -> CursorRun:
        agent = self._agent(request)
        run_id = request.params["run_id"]
        run = self.find_run(run_id) if run_id in agent.run_ids else None
        if not isinstance(run, CursorRun):
            raise SimError(404, "run_not_found", "Run not found")
        return run

    def _get_run(self, request: SimRequest) -> Response:
        return Response.json(200, self._run_json(self._run(request)))

    @staticmethod
    def _run_json(run: CursorRun) -> dict[str, Any]:
        return {
            "id": run.id,
            "agentId": run.agent_id,
            "status": run.state,
            "createdAt": _iso(run.created_at),
            "updatedAt": _iso(run.updated_at),
        }

    def _cancel_run(self, request: SimRequest) -> Response:
        run = self._run(request)
        if self.is_terminal(run.state):
            raise SimError(409, "run_not_cancellable", f"Run is already {run.state}")
        run.force("CANCELLED", self.now())
        return Response.json(200, {"id": run.id})

    # -- stream -------------------------------------------------------------------------

    def _stream(self, request: SimRequest) -> Response:
        """SSE of the run's events after ``Last-Event-ID``; see the module docstring."""
        run = self._run(request)
        retention = self.options["stream_retention_seconds"]
        if (
            retention is not None
            and self.is_terminal(run.state)
            and self.now() - run.updated_at >= float(retention)
        ):
            raise SimError(410, "stream_expired", "Stream retention window has passed")
        if int(self.options["stream_unavailable_next"]) > 0:
            self.options["stream_unavailable_next"] = (
                int(self.options["stream_unavailable_next"]) - 1
            )
            raise SimError(503, "stream_unavailable", "Stream temporarily unavailable")
        last_id = request.header("Last-Event-ID")
        sent = 0
        if last_id is not None:
            known = len(self._events(run, self.now()))
            if not last_id.isdigit() or not 0 < int(last_id) <= known:
                raise SimError(400, "invalid_last_event_id", "Unknown Last-Event-ID")
            sent = int(last_id)
        deadline = self.now() + float(self.options["stream_max_seconds"])
        return Response(
            200,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
            stream=lambda: self._stream_chunks(run, sent, deadline),
        )

    def _stream_chunks(self, run: CursorRun, sent: int, deadline: float) -> Iterator[bytes]:
        """Events not yet sent, then new ones as they happen; heartbeats while idle."""
        last_beat = self.now()
        while True:
            with self._lock:
                run.sync(self.now())
                events = self._events(run, self.now())
                finished = run.vanished or self.is_terminal(run.state)
            for number in range(sent + 1, len(events) + 1):
                yield _sse(*events[number - 1], event_id=number)
                last_beat = self.now()
            sent = max(sent, len(events))
            if finished or self.now() >= deadline:
                return
            if self.now() - last_beat >= HEARTBEAT_SECONDS:
                yield _sse("heartbeat", {})
                last_beat = self.now()
            if self.wait_released(STREAM_POLL_SECONDS):
                return

    def _events(self, run: CursorRun, now: float) -> list[tuple[str, dict[str, Any]]]:
        """The run's event log, derived from its history: only ever grows at the end."""
        ticks = run.ticks([self.RUNNING_STATE], EVENT_SECONDS, EVENT_LIMIT, now)
        events: list[tuple[str, dict[str, Any]]] = []
        tick_index = 0
        for index, (state, entered_at) in enumerate(run.history):
            events.append(("status", {"runId": run.id, "status": state, "at": _iso(entered_at)}))
            ends_at = run.history[index + 1][1] if index + 1 < len(run.history) else now
            while (
                state == self.RUNNING_STATE
                and tick_index < len(ticks)
                and ticks[tick_index] <= ends_at
            ):
                tick_index += 1
                events.append(self._progress_event(tick_index))
        if self.is_terminal(run.state):
            events += self._closing_events(run)
        return events

    @staticmethod
    def _progress_event(number: int) -> tuple[str, dict[str, Any]]:
        if number == 1:
            return "thinking", {"text": "Reading the repository and planning the change."}
        if number % 3 == 0:
            return "tool_call", {
                "name": "run_terminal_cmd",
                "args": {"command": f"pytest -k step{number}"},
            }
        return "assistant", {"text": f"Working on the task (step {number})."}

    @staticmethod
    def _closing_events(run: CursorRun) -> list[tuple[str, dict[str, Any]]]:
        if run.state == "FINISHED":
            closing = [("result", {"status": "FINISHED", "summary": f"Done: {run.prompt[:80]}"})]
        elif run.state == "ERROR":
            closing = [
                (
                    "error",
                    {"code": "agent_error", "message": "The agent failed to complete the task."},
                )
            ]
        else:
            closing = []
        return [*closing, ("done", {})]

    # -- artifacts ------------------------------------------------------------------------

    def _artifacts(self, request: SimRequest) -> Response:
        agent = self._agent(request)
        latest = self.find_run(agent.run_ids[-1])
        items = []
        if latest is not None and latest.state == "FINISHED":
            summary = f"# Summary\n\n{latest.prompt}\n"
            items.append(
                {
                    "path": SUMMARY_ARTIFACT,
                    "sizeBytes": len(summary.encode()),
                    "updatedAt": _iso(latest.updated_at),
                }
            )
        return Response.json(200, {"items": items})


SIMULATOR = CursorSimulator
