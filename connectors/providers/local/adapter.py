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
        return HealthResult(ok=True, message="Runs in this service's workers.")


ADAPTER = LocalAdapter
