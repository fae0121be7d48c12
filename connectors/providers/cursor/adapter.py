"""Cursor Cloud Agents API v1.

Facts relied on (https://cursor.com/docs/cloud-agent/api/endpoints and the
official ``cloud-agents-openapi.yaml``):

- Basic auth, the API key as user name and an empty password.
- A durable *agent* and one *run* per prompt. ``POST /v1/agents`` creates the
  agent and enqueues its first run: ``201 {"agent": {"id", "url",
  "latestRunId", ...}, "run": {"id", "agentId", "status"}}``. ``model`` is an
  object ``{"id": ...}``; omitted, Cursor picks the user/team default.
- No idempotency key. We name the agent's branch ``branchPrefix + dispatch_key``
  and find a lost create by listing agents (``GET /v1/agents?limit=&cursor=``,
  newest first, ``{"items", "nextCursor"}``). List items are ``AgentSummary``
  (``id, name, status, env, url, createdAt, updatedAt, latestRunId``), without
  ``branchName``: the full agent (``GET /v1/agents/{id}``) of each item created
  since the run's dispatch key was stored is read and its ``branchName``
  compared (at most ``RECOVERY_MAX_READS`` reads).
- Run status ``CREATING``, ``RUNNING``, ``FINISHED``, ``ERROR``, ``CANCELLED``,
  ``EXPIRED`` (the last four terminal).
- Cancel ``POST .../runs/{runId}/cancel`` → ``200 {"id"}`` (no status: the
  answer itself confirms the cancel); a run that already ended answers
  ``409 run_not_cancellable`` (we re-read it).
- Output ``GET .../runs/{runId}/stream``: Server-Sent Events, resumable with
  ``Last-Event-ID``; ``410 stream_expired`` after the retention window;
  ``invalid_last_event_id`` (the server does not know our cursor) and
  ``stream_unavailable`` (try again later) are handled in ``fetch_logs``.
- Errors ``{"error": {"code", "message"}}``; ``429`` carries ``Retry-After``,
  which ``connectors.http``'s rate-limit gate honours for the whole endpoint.
- Follow-up: ``POST /v1/agents/{id}/runs {"prompt": {"text"}}`` starts a new
  run on the existing agent, ``201 {"agent", "run"}``; one active run per
  agent, otherwise ``409 agent_busy``.
- ``GET /v1/me`` → ``{"apiKeyName", "createdAt", "userEmail"}``: the key check.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import requests

from connectors.base import (
    TERMINAL,
    CancelResult,
    Capabilities,
    ConfigField,
    DispatchResult,
    HealthResult,
    LogBatch,
    LogEntry,
    RunRef,
    RunSpec,
    RunState,
)
from connectors.errors import (
    ConfigurationError,
    ConnectorError,
    PermanentError,
    ProviderConflict,
    RunNotFound,
    TransientError,
)
from connectors.http_adapter import HttpAdapter
from connectors.redaction import Redactor
from connectors.sse import SseEvent, read_events

# (connect, read) seconds for ordinary calls.
TIMEOUT: tuple[float, float] = (3.05, 10.0)
# The stream: the read timeout is the longest silence we wait through, and one
# fetch stops reading after STREAM_BUDGET_S whatever the server keeps sending,
# so a fetch never holds a reconciler thread longer than about budget + idle.
STREAM_TIMEOUT: tuple[float, float] = (3.05, 2.0)
STREAM_BUDGET_S = 4.0
# Lost-create recovery reads at most this many agents (newest first): a create
# we lost is at most minutes old, so it is on the first page in practice.
RECOVERY_PAGE_SIZE = 100
RECOVERY_PAGES = 5
RECOVERY_MAX_READS = 25
# Clocks differ: an agent listed as created up to this long before the
# dispatch key was stored is still a candidate.
RECOVERY_CLOCK_SLACK_S = 300
# Stream events that are not output: keep-alives, the model's private
# reasoning (verbose, and not what the run did), and the end marker.
SILENT_EVENTS = frozenset({"heartbeat", "thinking", "done"})


class CursorAdapter(HttpAdapter):
    """One CCDash run = one new Cursor agent (and its first run)."""

    provider_id = "cursor"
    timeout = TIMEOUT
    label = "Cursor Cloud Agents"
    kind = "external"
    input_kind = "prompt"
    # supports_resume is False: a follow-up prompt (POST /v1/agents/{id}/runs)
    # is a new run of the agent, not a resumption of ours; it is a follow-up
    # (a new canonical run). Artifacts exist (GET /v1/agents/{id}/artifacts)
    # though the contract has no hook yet.
    CAPABILITIES = Capabilities(
        supports_streaming=True,
        supports_cancel=True,
        supports_artifacts=True,
        supports_follow_up=True,
        supports_logs=True,
    )
    default_base_url = "https://api.cursor.com"
    default_hosts = ("api.cursor.com",)
    config_fields = (
        ConfigField(
            "baseUrl", "Base URL", kind="url", default=default_base_url, help_text="Cursor API."
        ),
        ConfigField(
            "repository",
            "Repository URL",
            kind="url",
            required=True,
            help_text="The GitHub repository the agent works on, e.g. https://github.com/org/repo.",
        ),
        ConfigField("startingRef", "Starting ref", default="main", help_text="Branch, tag or SHA."),
        ConfigField(
            "model",
            "Model",
            help_text="A model id from GET /v1/models; empty uses the user/team default.",
        ),
        ConfigField(
            "autoCreatePr",
            "Open a pull request",
            kind="boolean",
            default=False,
            help_text="Let the agent open a PR when it finishes.",
        ),
        ConfigField(
            "branchPrefix",
            "Branch prefix",
            default="ccdash/",
            pattern=r"[A-Za-z0-9._/-]{1,100}",
            help_text="Each run works on branch <prefix><dispatch key>; used to find lost creates.",
        ),
    )
    secret_fields = (
        ConfigField("apiKey", "API key", required=True, help_text="Cursor Dashboard → API keys."),
    )
    state_table = {
        "CREATING": "queued",
        "RUNNING": "running",
        "FINISHED": "succeeded",
        "ERROR": "failed",
        "CANCELLED": "canceled",
        # EXPIRED: the run ran out of its time window without finishing; it
        # did not do what was asked, so it is a failure (not a cancel).
        "EXPIRED": "failed",
    }

    # --- contract --------------------------------------------------------------

    def dispatch(self, spec: RunSpec) -> DispatchResult:
        """Create an agent whose branch carries ``spec.dispatch_key``.

        Raises ``TransientError`` for a 2xx answer without ids: the agent may
        exist, and the retry finds it through ``recover_dispatch``.
        """
        branch = self._branch(spec)
        body: dict[str, Any] = {
            "prompt": {"text": spec.command},
            "repos": [
                {"url": self.settings.get("repository", ""), "startingRef": self._starting_ref}
            ],
            "branchName": branch,
            "autoCreatePR": bool(self.settings.get("autoCreatePr", False)),
        }
        if self.settings.get("model"):
            body["model"] = {"id": self.settings["model"]}
        answer = self.call_json("POST", "/v1/agents", "agent creation", json=body)
        agent, run = answer.get("agent") or {}, answer.get("run") or {}
        agent_id, run_id = agent.get("id") or run.get("agentId"), run.get("id")
        if not agent_id or not run_id:
            raise TransientError("Cursor agent creation answered without agent and run ids")
        return DispatchResult(
            provider_run_id=str(run_id),
            provider_url=str(agent.get("url") or ""),
            provider_status_raw=str(run.get("status") or ""),
            provider_state={"agentId": str(agent_id), "branchName": branch},
        )

    def recover_dispatch(self, spec: RunSpec) -> DispatchResult | None:
        """The agent whose ``branchName`` is ours, and its latest run (we never
        send follow-ups, so its only one).

        List items carry no branch, so the full agent of each listed item
        created since ``spec.created_at`` (newest first) is read, at most
        ``RECOVERY_MAX_READS`` of them. None when none matches. Raises like
        any call: a failed lookup must not lead to a second create."""
        branch, page_cursor, reads = self._branch(spec), None, 0
        since = (spec.created_at - RECOVERY_CLOCK_SLACK_S) if spec.created_at else None
        for _ in range(RECOVERY_PAGES):
            params: dict[str, Any] = {"limit": RECOVERY_PAGE_SIZE}
            if page_cursor:
                params["cursor"] = page_cursor
            page = self.call_json("GET", "/v1/agents", "agent list", params=params)
            for item in page.get("items") or []:
                if not isinstance(item, dict) or not item.get("id"):
                    continue
                created = _epoch(item.get("createdAt"))
                if since is not None and created is not None and created < since:
                    return None  # newest first: everything after is older still
                if reads >= RECOVERY_MAX_READS:
                    return None
                reads += 1
                agent = self.call_json("GET", f"/v1/agents/{item['id']}", "agent read")
                if agent.get("branchName") == branch:
                    if not agent.get("latestRunId"):
                        raise TransientError("Cursor shows our agent without its run id")
                    return DispatchResult(
                        provider_run_id=str(agent["latestRunId"]),
                        provider_url=str(agent.get("url") or item.get("url") or ""),
                        provider_state={"agentId": str(item["id"]), "branchName": branch},
                    )
            page_cursor = page.get("nextCursor")
            if not page_cursor:
                return None
        return None

    def poll_status(self, ref: RunRef) -> RunState:
        """The run's status; an unknown value maps to None (never raises for it)."""
        run = self.call_json("GET", self._run_path(ref), "run status")
        raw = str(run.get("status") or "")
        return RunState(provider_status_raw=raw, status=self.map_status(raw))

    def cancel(self, ref: RunRef) -> CancelResult:
        """Ask Cursor to stop the run. ``200 {"id"}`` confirms it (the answer
        has no status; the run is cancelled). 409 ``run_not_cancellable``
        (already ended): re-read the run; over, but the cancel was not
        accepted (``accepted=False``): its status is its own outcome."""
        response = self.send("POST", f"{self._run_path(ref)}/cancel")
        if response.status_code == 409:
            state = self.poll_status(ref)
            return CancelResult(
                confirmed=state.status in TERMINAL,
                provider_status_raw=state.provider_status_raw,
                accepted=False,
            )
        self.check(response, "run cancel")
        return CancelResult(confirmed=True, provider_status_raw="CANCELLED")

    def fetch_logs(self, ref: RunRef, cursor: Mapping[str, Any]) -> LogBatch:
        """Stream events after ``cursor["lastEventId"]`` as provider log entries.

        Reads until ``done``, a heartbeat (the server has sent all it has and
        is idling), the server closing, a silence of the stream read timeout,
        or ``STREAM_BUDGET_S``. Only complete events are taken, so the cursor
        never passes an event we did not return. ``{"done": true}`` (the run's
        stream ended) and ``{"expired": true}`` (``410 stream_expired``: the
        output is gone for good) in the cursor stop further requests.

        ``cursor["events"]`` counts the events consumed. When the server does
        not accept our ``Last-Event-ID`` (``invalid_last_event_id``), the
        stream is read again from the start without it and the first
        ``events`` events are skipped, so nothing is stored twice or lost.
        ``stream_unavailable`` raises ``TransientError``: the cursor stays,
        and the next fetch resumes where this one would have.
        """
        cursor = dict(cursor)
        if cursor.get("done") or cursor.get("expired"):
            return LogBatch(entries=(), cursor=cursor)
        response = self._open_stream(ref, cursor)
        skip = 0
        if _error_code(response) == "invalid_last_event_id":
            response.close()
            skip = int(cursor.get("events") or 0)
            cursor.pop("lastEventId", None)
            response = self._open_stream(ref, cursor)
        entries: list[LogEntry] = []
        try:
            if response.status_code == 410:
                return LogBatch(entries=(), cursor={**cursor, "expired": True})
            if _error_code(response) == "stream_unavailable":
                raise TransientError(
                    "Cursor stream unavailable; output is read again at the next poll",
                    status_code=response.status_code,
                )
            self.check(response, "run stream")
            for event in read_events(response, budget_s=STREAM_BUDGET_S):
                if event.id is not None:
                    cursor["lastEventId"] = event.id
                    if skip:
                        skip -= 1
                        continue
                    cursor["events"] = int(cursor.get("events") or 0) + 1
                if event.event == "done":
                    cursor["done"] = True
                if event.event in ("done", "heartbeat"):
                    break
                if event.event not in SILENT_EVENTS:
                    entries.append(_log_entry(event))
        finally:
            response.close()
        return LogBatch(entries=tuple(entries), cursor=cursor)

    def follow_up(self, parent: RunRef, text: str) -> DispatchResult:
        """A new run of the parent's agent. ``409`` (``agent_busy``: the agent
        has an active run) raises ``ProviderConflict`` with Cursor's code."""
        agent_id = parent.provider_state.get("agentId")
        if not agent_id:
            raise RunNotFound(f"Run {parent.provider_run_id} has no Cursor agent id recorded")
        response = self.send("POST", f"/v1/agents/{agent_id}/runs", json={"prompt": {"text": text}})
        if response.status_code == 409:
            code, message = _error_of(response)
            message = Redactor(self.secrets.secret_values()).scrub(message)
            raise ProviderConflict(
                f"Cursor refused the follow-up: {message or 'the agent has an active run'}",
                code=code or "agent_busy",
                status_code=409,
            )
        self.check(response, "follow-up run")
        answer = self.decode(response, "follow-up run")
        agent, run = answer.get("agent") or {}, answer.get("run") or answer
        if not run.get("id"):
            raise PermanentError("Cursor follow-up answered without a run id")
        return DispatchResult(
            provider_run_id=str(run["id"]),
            provider_url=str(agent.get("url") or ""),
            provider_status_raw=str(run.get("status") or ""),
            provider_state={
                "agentId": str(agent_id),
                "branchName": str(parent.provider_state.get("branchName") or ""),
            },
        )

    def _open_stream(self, ref: RunRef, cursor: Mapping[str, Any]) -> requests.Response:
        headers = {"Accept": "text/event-stream"}
        if cursor.get("lastEventId"):
            headers["Last-Event-ID"] = str(cursor["lastEventId"])
        return self.send(
            "GET",
            f"{self._run_path(ref)}/stream",
            timeout=STREAM_TIMEOUT,
            headers=headers,
            stream=True,
        )

    def check_health(self) -> HealthResult:
        """``GET /v1/me`` with the key; never raises, never shows the key.

        The repository is not checked here: Cursor's repository listing is
        limited to a few calls an hour; a wrong one fails the dispatch with
        Cursor's ``validation_error`` message instead.
        """
        if not self.secrets.get("apiKey"):
            return HealthResult(ok=False, message="No Cursor API key is configured.")
        try:
            response = self.send("GET", "/v1/me")
            if response.status_code in (401, 403):
                return HealthResult(
                    ok=False, message=f"API key rejected by Cursor (HTTP {response.status_code})."
                )
            self.check(response, "API key check")
            me = self.decode(response, "API key check")
        except (ConnectorError, ConfigurationError) as exc:
            return HealthResult(ok=False, message=exc.message)
        key_name = str(me.get("apiKeyName") or "unnamed")
        return HealthResult(ok=True, message=f"API key “{key_name}” accepted by Cursor.")

    # --- helpers -------------------------------------------------------------------

    @property
    def _starting_ref(self) -> str:
        return str(self.settings.get("startingRef") or "main")

    def _branch(self, spec: RunSpec) -> str:
        return f"{self.settings.get('branchPrefix') or 'ccdash/'}{spec.dispatch_key}"

    def _run_path(self, ref: RunRef) -> str:
        agent_id = ref.provider_state.get("agentId")
        if not agent_id:
            raise RunNotFound(f"Run {ref.provider_run_id} has no Cursor agent id recorded")
        return f"/v1/agents/{agent_id}/runs/{ref.provider_run_id}"

    def auth_headers(self) -> dict[str, str]:
        # Basic auth: the key as user name, an empty password.
        token = base64.b64encode(f"{self.require_secret('apiKey')}:".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def _error_of(response: requests.Response) -> tuple[str, str]:
    """``(code, message)`` of a Cursor error body ``{"error": {"code", "message"}}``."""
    try:
        body = response.json()
    except ValueError:
        return "", ""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return "", ""
    return str(error.get("code") or "")[:64], str(error.get("message") or "")[:200]


def _epoch(value: Any) -> float | None:
    """Epoch seconds of an ISO-8601 timestamp; None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _error_code(response: requests.Response) -> str:
    """``error.code`` of a Cursor error answer ("" for anything else)."""
    return _error_of(response)[0] if response.status_code >= 400 else ""


def _log_entry(event: SseEvent) -> LogEntry:
    try:
        data = json.loads(event.data) if event.data else {}
    except ValueError:
        data = event.data
    payload = {"event": event.event, "eventId": event.id}
    if not isinstance(data, dict):
        return LogEntry(stream="provider", text=_line(str(data)), payload=payload)
    if event.event == "status":
        text = f"Status: {data.get('status', '')}"
    elif event.event == "tool_call":
        args = json.dumps(data.get("args", {}), separators=(",", ":"), default=str)
        text = f"Tool call: {data.get('name', '')} {args}"
    elif event.event == "error":
        text = f"Error {data.get('code', '')}: {data.get('message', '')}".strip()
    else:  # assistant, result and any event type added later
        text = str(data.get("text") or data.get("summary") or data.get("message") or event.data)
    return LogEntry(stream="provider", text=_line(text), payload=payload)


def _line(text: str) -> str:
    """The text as one line, ending in a newline like every log entry."""
    return text if text.endswith("\n") else text + "\n"


ADAPTER = CursorAdapter
