"""The local executor as an adapter: runs the command in this service's own
django-q2 workers (``execution.local_runtime``), always available, the default
and the fallback of every project."""

from __future__ import annotations

from django_q.tasks import async_task

from connectors.base import (
    CancelResult,
    Capabilities,
    DispatchResult,
    HealthResult,
    ProviderAdapter,
    RunRef,
    RunSpec,
    RunState,
)
from connectors.errors import UnsupportedOperation

# The task is named by path: connectors must not import execution's models.
LOCAL_TASK = "execution.local_runtime.execute_run"


class LocalAdapter(ProviderAdapter):
    provider_id = "local"
    label = "Local executor"
    kind = "local"
    input_kind = "command"
    CAPABILITIES = Capabilities(supports_streaming=True, supports_cancel=True)
    state_table = {
        "queued": "queued",
        "running": "running",
        "succeeded": "succeeded",
        "failed": "failed",
        "canceled": "canceled",
    }

    def dispatch(self, spec: RunSpec) -> DispatchResult:
        """Enqueue the run for a worker. Enqueuing twice is harmless: the
        runtime claims the run with a queued → running compare-and-swap."""
        async_task(LOCAL_TASK, spec.run_id, task_name=f"run-{spec.run_id}", group="local-runs")
        return DispatchResult(provider_run_id=f"local-{spec.run_id}", provider_status_raw="queued")

    def poll_status(self, ref: RunRef) -> RunState:
        # Nothing to ask: local runs are watched through the worker heartbeat.
        raise UnsupportedOperation("local runs are reconciled by worker heartbeat, not polling")

    def cancel(self, ref: RunRef) -> CancelResult:
        # The worker sees the run turn ``canceling`` and ends its process group.
        return CancelResult(confirmed=False)

    def check_health(self) -> HealthResult:
        """Unhealthy when local runs would fail: the sandbox is required but
        bubblewrap is missing or cannot create namespaces on this host."""
        # Imported here: the sandbox settings live with the executor, not the connectors.
        from execution.sandbox_config import usable_sandbox

        choice = usable_sandbox()
        if choice.mode == "unavailable":
            return HealthResult(ok=False, message=choice.message)
        if choice.mode == "none":
            return HealthResult(
                ok=True,
                message="Runs in this service's workers, unsandboxed (EXECUTION_SANDBOX=none).",
            )
        return HealthResult(
            ok=True, message="Runs in this service's workers, in a bubblewrap sandbox."
        )


ADAPTER = LocalAdapter
