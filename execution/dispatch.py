"""Dispatch: the fixed pipeline every run goes through after approval.

policy (again, right before sending) → route (enabled, rollout, health,
circuit; fallback to local when allowed) → adapter → store the provider's ids.

Idempotent: the run's ``dispatch_key`` is persisted when the run is created
and ``dispatch_attempts`` is bumped *before* the provider is called; a
re-delivered or retried task that finds an earlier attempt asks the adapter to
``recover_dispatch`` (find the run it created) before sending again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from connectors import circuit
from connectors.base import DispatchResult, ProviderAdapter, RunRef, RunSpec
from connectors.configs import build_adapter, get_config, project_redactor
from connectors.errors import (
    AuthError,
    ConfigurationError,
    ConnectorError,
    TransientError,
    UnknownProvider,
)
from connectors.models import HealthStatus, ProviderConfig
from connectors.registry import LOCAL_PROVIDER_ID, adapter_class
from execution import policy_gate
from execution.events import audit
from execution.models import Run
from execution.states import RunStatus, SyncStatus
from execution.transitions import transition

logger = logging.getLogger(__name__)

DISPATCH_TASK = "execution.dispatch.dispatch_run"
# Transient dispatch failures are retried by the reconciler sweep this often,
# this many times, before the run fails visibly.
DISPATCH_RETRY_S = 15.0
MAX_DISPATCH_ATTEMPTS = 5


@dataclass(frozen=True)
class Route:
    provider_id: str
    config: ProviderConfig | None = None
    fallback_from: str = ""
    fallback_reason: str = ""
    fallback_message: str = ""


class NoRoute(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def enqueue_dispatch(run_id: int) -> None:
    """Dispatch in a worker once the current transaction has committed."""
    transaction.on_commit(
        lambda: async_task(DISPATCH_TASK, run_id, task_name=f"dispatch-{run_id}", group="dispatch")
    )


def _in_rollout(run: Run, config: ProviderConfig) -> bool:
    return run.pk % 100 < config.rollout_percent


def choose_route(run: Run) -> Route:
    """Where the run goes. Raises ``NoRoute`` when the provider is unavailable
    and fallback to local is not allowed."""
    provider_id = run.provider_id
    if provider_id == LOCAL_PROVIDER_ID:
        return Route(LOCAL_PROVIDER_ID)
    config = get_config(run.project_id, provider_id)
    label = adapter_class(provider_id).label
    problem: tuple[str, str] | None = None
    if config is None or not config.enabled:
        problem = ("provider_disabled", f"{label} is not enabled for this project.")
    elif not _in_rollout(run, config):
        problem = ("provider_not_rolled_out", f"{label} is not rolled out to this run.")
    elif config.health_status == HealthStatus.FAILING:
        detail = f": {config.health_message}" if config.health_message else "."
        problem = ("provider_unhealthy", f"{label} is failing its health check{detail}")
    elif circuit.is_open(provider_id, build_adapter(provider_id, config).base_url):
        problem = ("provider_circuit_open", f"{label} is failing repeatedly; circuit open.")
    if problem is None:
        return Route(provider_id, config)
    allowed = config.allow_fallback_to_local if config else run.project.allow_fallback_to_local
    if allowed and run.project.allow_fallback_to_local:
        return Route(LOCAL_PROVIDER_ID, None, provider_id, *problem)
    raise NoRoute(*problem)


def run_spec(run: Run) -> RunSpec:
    return RunSpec(
        run_id=run.pk,
        dispatch_key=run.dispatch_key,
        command=run.command,
        project_id=run.project_id,
        project_name=run.project.name,
        workspace_root=run.project.workspace_root,
        cwd=run.cwd,
        env_profile=run.env_profile,
        feature_id=run.feature_id,
    )


def dispatch_run(run_id: int) -> str:
    """Task body: send a queued run to its provider. Returns what happened."""
    run = Run.objects.select_related("project").get(pk=run_id)
    if run.status != RunStatus.QUEUED or run.provider_run_id:
        return "skipped"
    decision = policy_gate.evaluate_run(run)
    if decision.verdict == "deny":
        transition(
            run,
            RunStatus.BLOCKED,
            reason="policy_denied",
            message=", ".join(decision.reason_codes),
        )
        return "blocked"
    if decision.verdict == "requires_approval" and run.approved_by_id is None:
        # The policy tightened since creation: never send without approval.
        transition(
            run,
            RunStatus.BLOCKED,
            reason="approval_required",
            message="policy now requires an approval; retry the run",
        )
        return "blocked"
    try:
        route = choose_route(run)
    except UnknownProvider as exc:
        # The provider was removed from the registry after the run was created.
        transition(run, RunStatus.FAILED, reason="unknown_provider", message=exc.message)
        return "failed"
    except NoRoute as no_route:
        transition(run, RunStatus.FAILED, reason=no_route.code, message=no_route.message)
        return "failed"
    if route.fallback_from:
        Run.objects.filter(pk=run.pk).update(
            provider_id=LOCAL_PROVIDER_ID, fallback_from_provider_id=route.fallback_from
        )
        run.provider_id, run.fallback_from_provider_id = LOCAL_PROVIDER_ID, route.fallback_from
        audit(
            run.pk,
            "fallback_to_local",
            route.fallback_message,
            fromProviderId=route.fallback_from,
            reason=route.fallback_reason,
        )
    adapter = build_adapter(route.provider_id, route.config)
    return _send(run, adapter)


def _send(run: Run, adapter: ProviderAdapter) -> str:
    spec = run_spec(run)
    earlier_attempts = run.dispatch_attempts
    # Persist the attempt before the provider can create anything.
    Run.objects.filter(pk=run.pk).update(dispatch_attempts=F("dispatch_attempts") + 1)
    redactor = project_redactor(run.project_id)
    try:
        result = adapter.recover_dispatch(spec) if earlier_attempts else None
        recovered = result is not None
        if result is None:
            result = adapter.dispatch(spec)
    except TransientError as exc:
        return _dispatch_failed_transiently(run, adapter, redactor.scrub(exc.message), exc)
    except (ConnectorError, ConfigurationError) as exc:
        message = redactor.scrub(getattr(exc, "message", str(exc)))
        reason = "provider_auth_failed" if isinstance(exc, AuthError) else "dispatch_failed"
        if isinstance(exc, AuthError | ConfigurationError) and adapter.kind == "external":
            _mark_config_failing(run, adapter, message)
        transition(run, RunStatus.FAILED, reason=reason, message=message)
        return "failed"
    circuit.record_success(adapter.provider_id, adapter.base_url)
    _store_result(run, adapter, result, recovered)
    return "recovered" if recovered else "dispatched"


def _store_result(run: Run, adapter: ProviderAdapter, result: DispatchResult, recovered: bool):
    now = timezone.now()
    interval = settings.EXECUTION["RECONCILE_INTERVAL_S"]
    stored = Run.objects.filter(pk=run.pk, provider_run_id="").update(
        provider_run_id=result.provider_run_id,
        provider_url=result.provider_url,
        provider_status_raw=result.provider_status_raw,
        provider_state=dict(result.provider_state),
        sync_status=SyncStatus.IN_SYNC,
        last_sync_error="",
        last_reconciled_at=now,
        next_reconcile_at=(
            now + timedelta(seconds=interval) if adapter.kind == "external" else None
        ),
    )
    if not stored:
        return
    audit(
        run.pk,
        "dispatch_recovered" if recovered else "dispatched",
        f"{'Found the run already created on' if recovered else 'Sent to'} {adapter.label}"
        + (f": {result.provider_url}" if result.provider_url else ""),
        providerId=adapter.provider_id,
        providerRunId=result.provider_run_id,
    )
    run.refresh_from_db()
    if run.status in (RunStatus.CANCELING, RunStatus.CANCELED) and adapter.kind == "external":
        # Canceled while the provider was creating it: stop the external run too.
        try:
            adapter.cancel(
                RunRef(
                    run.pk, result.provider_run_id, run.dispatch_key, dict(result.provider_state)
                )
            )
        except ConnectorError as exc:
            logger.warning("cancel after late dispatch of run %s failed: %s", run.pk, exc)


def _dispatch_failed_transiently(
    run: Run, adapter: ProviderAdapter, message: str, exc: TransientError
) -> str:
    circuit.record_failure(adapter.provider_id, adapter.base_url, message)
    run.refresh_from_db(fields=["dispatch_attempts"])
    if run.dispatch_attempts >= MAX_DISPATCH_ATTEMPTS:
        transition(
            run,
            RunStatus.FAILED,
            reason="dispatch_failed",
            message=(
                f"{adapter.label} unreachable after {run.dispatch_attempts} attempts: {message}"
            ),
        )
        return "failed"
    delay = max(DISPATCH_RETRY_S, exc.retry_after or 0.0)
    Run.objects.filter(pk=run.pk).update(
        last_sync_error=message,
        next_reconcile_at=timezone.now() + timedelta(seconds=delay),
    )
    audit(
        run.pk,
        "dispatch_retry_scheduled",
        f"{adapter.label} unreachable, retrying in {delay:.0f}s: {message}",
        attempt=run.dispatch_attempts,
    )
    return "retry_scheduled"


def _mark_config_failing(run: Run, adapter: ProviderAdapter, message: str) -> None:
    ProviderConfig.objects.filter(
        project_id=run.project_id, provider_id=adapter.provider_id
    ).update(
        health_status=HealthStatus.FAILING, health_checked_at=timezone.now(), health_message=message
    )
