"""A scriptable in-memory provider for reconciler tests.

Each provider run follows a script of native statuses (one step per poll, the
last one sticks); the backend can be taken down (transient errors, with an
optional Retry-After), made to answer permanent errors, slowed down, or given
a hook that runs inside every poll (barriers, stop signals). Every poll and
log fetch is recorded with its thread and time, so tests can assert who asked
what and when. Nothing here touches the network or the database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.base import (
    CancelResult,
    Capabilities,
    DispatchResult,
    HealthResult,
    LogBatch,
    LogEntry,
    ProviderAdapter,
    RunRef,
    RunSpec,
    RunState,
)
from connectors.errors import ConnectorError, RunNotFound

STATE_TABLE = {
    "pending": "queued",
    "working": "running",
    "needs_input": "waiting",
    "done": "succeeded",
    "error": "failed",
    "stopped": "canceled",
}


@dataclass
class ScriptedRun:
    statuses: list[str]
    logs: list[str] = field(default_factory=list)
    step: int = 0

    def advance(self) -> str:
        status = self.statuses[min(self.step, len(self.statuses) - 1)]
        self.step += 1
        return status


@dataclass(frozen=True)
class Call:
    operation: str
    provider_run_id: str
    thread: str
    at: float


class ScriptedBackend:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, ScriptedRun] = {}
        self.calls: list[Call] = []
        # A callable returning the exception the next poll raises (None: answer).
        self.failure: Callable[[], ConnectorError] | None = None
        self.log_failure: Callable[[], ConnectorError] | None = None
        self.delay_s = 0.0
        self.on_poll: Callable[[str], None] | None = None
        self.message = ""
        self.exit_code: int | None = None
        # Like Devin: every poll carries the output since the stored cursor.
        self.logs_with_poll = False
        # A callable returning the exception the next cancel raises (None: accepted).
        self.cancel_failure: Callable[[], ConnectorError] | None = None
        # The native status a run reports once its cancel was accepted.
        self.after_cancel = "stopped"

    def add(self, provider_run_id: str, *statuses: str, logs: list[str] | None = None) -> None:
        self.runs[provider_run_id] = ScriptedRun(list(statuses), list(logs or []))

    def record(self, operation: str, provider_run_id: str) -> None:
        with self.lock:
            self.calls.append(
                Call(operation, provider_run_id, threading.current_thread().name, time.time())
            )

    def polls(self, provider_run_id: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.operation == "poll"
            and (provider_run_id is None or c.provider_run_id == provider_run_id)
        ]

    def fetches(self) -> list[Call]:
        return [c for c in self.calls if c.operation == "logs"]

    def cancels(self) -> list[Call]:
        return [c for c in self.calls if c.operation == "cancel"]


class ScriptedAdapter(ProviderAdapter):
    """Subclassed per provider id by ``adapter_for``."""

    label = "Scripted provider"
    kind = "external"
    input_kind = "command"
    state_table = STATE_TABLE
    backend: ScriptedBackend

    @classmethod
    def capabilities(cls) -> Capabilities:
        return Capabilities(
            supports_streaming=True,
            supports_cancel=True,
            supports_logs=True,
            logs_with_status=cls.backend.logs_with_poll,
        )

    def poll_status(self, ref: RunRef) -> RunState:
        return self._poll(ref, None)

    def poll_status_with_logs(self, ref: RunRef, cursor: Mapping[str, Any]) -> RunState:
        return self._poll(ref, cursor)

    def _poll(self, ref: RunRef, cursor: Mapping[str, Any] | None) -> RunState:
        backend = self.backend
        backend.record("poll", ref.provider_run_id)
        if backend.on_poll is not None:
            backend.on_poll(ref.provider_run_id)
        if backend.delay_s:
            time.sleep(backend.delay_s)
        if backend.failure is not None:
            raise backend.failure()
        run = backend.runs.get(ref.provider_run_id)
        if run is None:
            raise RunNotFound(f"run {ref.provider_run_id} not found", status_code=404)
        with backend.lock:
            raw = run.advance()
        logs = None
        if cursor is not None:
            offset = int(cursor.get("offset", 0))
            lines = run.logs[offset:]
            if lines:
                logs = LogBatch(
                    entries=tuple(LogEntry("provider", line) for line in lines),
                    cursor={"offset": offset + len(lines)},
                )
        return RunState(
            provider_status_raw=raw,
            status=self.map_status(raw),
            provider_url=f"{self.base_url}/runs/{ref.provider_run_id}",
            message=backend.message,
            exit_code=backend.exit_code,
            logs=logs,
        )

    def fetch_logs(self, ref: RunRef, cursor: Mapping[str, Any]) -> LogBatch:
        backend = self.backend
        backend.record("logs", ref.provider_run_id)
        if backend.log_failure is not None:
            raise backend.log_failure()
        run = backend.runs[ref.provider_run_id]
        offset = int(cursor.get("offset", 0))
        lines = run.logs[offset:]
        return LogBatch(
            entries=tuple(LogEntry("stdout", line) for line in lines),
            cursor={"offset": offset + len(lines)},
        )

    def cancel(self, ref: RunRef) -> CancelResult:
        """Accepted (the run then reports ``after_cancel``), or ``cancel_failure``."""
        backend = self.backend
        backend.record("cancel", ref.provider_run_id)
        if backend.cancel_failure is not None:
            raise backend.cancel_failure()
        run = backend.runs[ref.provider_run_id]
        with backend.lock:
            run.statuses, run.step = [backend.after_cancel], 0
        return CancelResult(confirmed=False)

    def dispatch(self, spec: RunSpec) -> DispatchResult:
        provider_run_id = f"sent-{spec.run_id}"
        self.backend.add(provider_run_id, "working")
        return DispatchResult(provider_run_id, provider_status_raw="pending")

    def check_health(self) -> HealthResult:
        return HealthResult(ok=True)


def adapter_for(provider_id: str, backend: ScriptedBackend) -> type[ScriptedAdapter]:
    return type(
        f"Scripted_{provider_id}",
        (ScriptedAdapter,),
        {
            "provider_id": provider_id,
            "label": f"Scripted {provider_id}",
            "backend": backend,
            "default_base_url": f"https://{provider_id}.invalid",
        },
    )
