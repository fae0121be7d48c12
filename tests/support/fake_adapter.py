"""An external provider that lives in memory, for routing, dispatch and secrecy tests.

``FakeAdapter`` (provider id ``fake``) follows the adapter contract without any
network: runs are kept in a module-level ``FakeBackend`` that tests inspect
(how many creates, recoveries, polls) and steer (the next call fails with a
transient, auth or configuration error, or "crashes" right after creating the
run, optionally echoing the API key in its error text like a careless provider).

It is not in ``connectors.registry.REGISTRY``; a test registers it for its own
duration::

    def test_something(monkeypatch):
        backend = use_fake_provider(monkeypatch)
        ...
        assert backend.create_calls == 1
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from connectors import registry
from connectors.base import (
    CancelResult,
    Capabilities,
    ConfigField,
    DispatchResult,
    HealthResult,
    LogBatch,
    LogEntry,
    ProviderAdapter,
    RunRef,
    RunSpec,
    RunState,
)
from connectors.errors import (
    AuthError,
    ConfigurationError,
    RunNotFound,
    TransientError,
)

FAKE_PROVIDER_ID = "fake"
FailureKind = Literal["transient", "auth", "config", "crash_after_create"]


class SimulatedCrash(RuntimeError):
    """Stands for the worker dying between the provider's create and our DB write."""


@dataclass
class FakeRun:
    provider_run_id: str
    dispatch_key: str
    command: str
    status: str = "pending"
    logs: list[str] = field(default_factory=list)


@dataclass
class _Failure:
    kind: FailureKind
    operations: frozenset[str]
    echo_secret: bool
    remaining: int


class FakeBackend:
    """The fake provider's state: its runs, call counters and scheduled failures."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.runs: dict[str, FakeRun] = {}
        self.dispatch_calls = 0  # every call of ``dispatch``
        self.create_calls = 0  # runs actually created
        self.recover_calls = 0
        self.poll_calls = 0
        self.cancel_calls = 0
        self.health_calls = 0
        self.healthy = True
        self._failures: list[_Failure] = []

    def fail_next(
        self,
        kind: FailureKind,
        *,
        operations: tuple[str, ...] = ("dispatch",),
        times: int = 1,
        echo_secret: bool = False,
    ) -> None:
        """Make the next ``times`` calls of ``operations`` fail with ``kind``.

        ``echo_secret`` puts the API key into the error text, as a provider
        that echoes the request's credential would: the pipeline must scrub it.
        """
        self._failures.append(_Failure(kind, frozenset(operations), echo_secret, times))

    def take_failure(self, operation: str) -> _Failure | None:
        with self._lock:
            for failure in self._failures:
                if operation in failure.operations and failure.remaining > 0:
                    failure.remaining -= 1
                    return failure
        return None

    def create(self, spec: RunSpec) -> FakeRun:
        with self._lock:
            run = FakeRun(f"fake-{next(self._ids)}", spec.dispatch_key, spec.command)
            self.runs[run.provider_run_id] = run
            self.create_calls += 1
            return run

    def find_by_dispatch_key(self, dispatch_key: str) -> FakeRun | None:
        with self._lock:
            return next((r for r in self.runs.values() if r.dispatch_key == dispatch_key), None)


BACKEND = FakeBackend()


class FakeAdapter(ProviderAdapter):
    """In-memory external provider (see the module docstring)."""

    provider_id = FAKE_PROVIDER_ID
    label = "Fake provider"
    kind = "external"
    input_kind = "command"
    CAPABILITIES = Capabilities(supports_cancel=True, supports_streaming=True, supports_logs=True)
    default_base_url = "https://fake-provider.invalid"
    # Reserved names (RFC 2606/6761): the "public" hosts of a provider that is not real.
    default_hosts = ("fake-provider.invalid", "fake.example.test", "a.test")
    config_fields = (
        ConfigField(
            "baseUrl",
            "Base URL",
            kind="url",
            default="https://fake-provider.invalid",
            help_text="Where the fake provider pretends to live.",
        ),
    )
    secret_fields = (ConfigField("apiKey", "API key", required=True, help_text="Any value."),)
    state_table = {
        "pending": "queued",
        "working": "running",
        "blocked": "waiting",
        "stopping": "canceling",
        "done": "succeeded",
        "error": "failed",
        "stopped": "canceled",
    }

    @property
    def backend(self) -> FakeBackend:
        return BACKEND

    def _fail_if_scheduled(self, operation: str) -> _Failure | None:
        """Raise the failure scheduled for ``operation``; a ``crash_after_create``
        is handed back instead (only ``dispatch`` acts on it)."""
        failure = self.backend.take_failure(operation)
        if failure is None or failure.kind == "crash_after_create":
            return failure
        echo = f" (key {self.secrets.get('apiKey', '')})" if failure.echo_secret else ""
        if failure.kind == "transient":
            raise TransientError(f"fake provider unavailable{echo}", status_code=503)
        if failure.kind == "auth":
            raise AuthError(f"fake provider rejected the API key{echo}", status_code=401)
        raise ConfigurationError(
            f"fake provider rejected the configuration{echo}", {"baseUrl": ["Rejected."]}
        )

    def _require_key(self) -> None:
        if not self.secrets.get("apiKey"):
            raise AuthError("no API key configured for the fake provider", status_code=401)

    def dispatch(self, spec: RunSpec) -> DispatchResult:
        self.backend.dispatch_calls += 1
        self._require_key()
        crash = self._fail_if_scheduled("dispatch")
        run = self.backend.create(spec)
        if crash is not None:
            raise SimulatedCrash("worker died after the provider created the run")
        return self._result(run)

    def recover_dispatch(self, spec: RunSpec) -> DispatchResult | None:
        self.backend.recover_calls += 1
        self._require_key()
        self._fail_if_scheduled("recover_dispatch")
        run = self.backend.find_by_dispatch_key(spec.dispatch_key)
        return self._result(run) if run else None

    def poll_status(self, ref: RunRef) -> RunState:
        self.backend.poll_calls += 1
        self._require_key()
        self._fail_if_scheduled("poll_status")
        run = self._run(ref)
        return RunState(
            provider_status_raw=run.status,
            status=self.map_status(run.status),
            provider_url=self._url(run),
        )

    def cancel(self, ref: RunRef) -> CancelResult:
        self.backend.cancel_calls += 1
        self._require_key()
        self._fail_if_scheduled("cancel")
        run = self._run(ref)
        ended = run.status in ("done", "error", "stopped")  # an ended run stays as it ended
        if not ended:
            run.status = "stopped"
        return CancelResult(confirmed=True, provider_status_raw=run.status, accepted=not ended)

    def fetch_logs(self, ref: RunRef, cursor: Mapping[str, Any]) -> LogBatch:
        self._require_key()
        self._fail_if_scheduled("fetch_logs")
        run = self._run(ref)
        offset = int(cursor.get("offset", 0))
        entries = tuple(LogEntry("provider", line) for line in run.logs[offset:])
        return LogBatch(entries=entries, cursor={"offset": len(run.logs)})

    def check_health(self) -> HealthResult:
        self.backend.health_calls += 1
        try:
            self._require_key()
            self._fail_if_scheduled("check_health")
        except (AuthError, TransientError, ConfigurationError) as exc:
            return HealthResult(ok=False, message=str(exc))
        if not self.backend.healthy:
            return HealthResult(ok=False, message="fake provider reports an outage")
        return HealthResult(ok=True, message="fake provider accepted the API key")

    def _run(self, ref: RunRef) -> FakeRun:
        run = self.backend.runs.get(ref.provider_run_id)
        if run is None:
            raise RunNotFound(f"fake run {ref.provider_run_id} not found", status_code=404)
        return run

    def _url(self, run: FakeRun) -> str:
        return f"{self.base_url}/runs/{run.provider_run_id}"

    def _result(self, run: FakeRun) -> DispatchResult:
        return DispatchResult(
            provider_run_id=run.provider_run_id,
            provider_url=self._url(run),
            provider_status_raw=run.status,
            provider_state={"dispatchKey": run.dispatch_key},
        )


def use_fake_provider(monkeypatch) -> FakeBackend:
    """Register ``FakeAdapter`` for the current test (pytest ``monkeypatch``)
    and give it a fresh backend; both are undone when the test ends."""
    backend = FakeBackend()
    monkeypatch.setitem(registry.REGISTRY, FAKE_PROVIDER_ID, FakeAdapter)
    monkeypatch.setattr(sys.modules[__name__], "BACKEND", backend)
    return backend
