"""Dispatch: the fixed pipeline every run goes through after approval.

policy (again, right before sending) → route (enabled, rollout, health,
circuit; fallback when allowed) → adapter → store the provider's ids.

Fallback keeps the run's kind: a command run falls back to the local executor
(when the project and the provider config allow it); a prompt run only to the
prompt providers of the project's ``agent_fallback_chain``, and without one it
fails visibly as ``provider_unavailable``. A prompt never reaches the local
shell: ``_send`` refuses any adapter whose ``input_kind`` is not the run's.
An approval is the run's: it covers the run on whichever provider of its kind
it lands, and the fallback event says so.

Idempotent: the run's ``dispatch_key`` is persisted when the run is created
and ``dispatch_attempts`` is bumped *before* the provider is called; a
re-delivered or retried task that finds an earlier attempt asks the adapter to
``recover_dispatch`` (find the run it created) before sending again.

Cancel while dispatching: a run canceled after its first dispatch attempt
began is ``canceling`` with no provider run id (``services.cancel``). The
cancel is sent as soon as the id is known: right after the dispatch stores
it, or, when the dispatch must be retried, by the retry, which then only
looks the run up (``recover_dispatch``) and never creates one.
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
from connectors import health as provider_health
from connectors.base import DispatchResult, ProviderAdapter, RunRef, RunSpec
from connectors.configs import build_adapter, get_config, project_redactor
from connectors.errors import (
    AuthError,
    ConfigurationError,
    ConnectorError,
    DispatchUnconfirmed,
    ProviderConflict,
    TransientError,
    UnknownProvider,
)
from connectors.models import ProviderConfig
from connectors.registry import LOCAL_PROVIDER_ID, adapter_class
from execution import policy_gate
from execution.events import audit
from execution.models import Run, RunKind
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
    """No provider of the run's kind can take it. ``cause``: the original
    provider's problem when ``code`` sums it up (``provider_unavailable``)."""

    def __init__(self, code: str, message: str, cause: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message
        self.cause = cause or code


def enqueue_dispatch(run_id: int) -> None:
    """Dispatch in a worker once the current transaction has committed."""
    transaction.on_commit(
        lambda: async_task(DISPATCH_TASK, run_id, task_name=f"dispatch-{run_id}", group="dispatch")
    )


def _in_rollout(run: Run, config: ProviderConfig) -> bool:
    return run.pk % 100 < config.rollout_percent


Problem = tuple[str, str]


def availability(
    run: Run, provider_id: str, *, rollout: bool = True
) -> tuple[ProviderConfig | None, Problem | None]:
    """The provider's config for the run's project and, when the run cannot
    go there, ``(reason_code, message)``: disabled, not rolled out to this
    run (unless ``rollout`` is False: a follow-up stays with its agent),
    failing its health check (with its message), or circuit open.

    Health and the circuit are breakers, not flags: a provider held back by a
    failed check or by outages gets one run again as a half-open probe once
    ``CIRCUIT_RESET_S`` has passed (``connectors.health``,
    ``connectors.circuit``; when this answers no problem for such a provider,
    the caller's run is that probe), so a recovered provider is used again
    without anyone acting."""
    if provider_id == LOCAL_PROVIDER_ID:
        return None, None
    config = get_config(run.project_id, provider_id)
    label = adapter_class(provider_id).label
    problem: tuple[str, str] | None = None
    if config is None or not config.enabled:
        problem = ("provider_disabled", f"{label} is not enabled for this project.")
    elif rollout and not _in_rollout(run, config):
        problem = ("provider_not_rolled_out", f"{label} is not rolled out to this run.")
    elif (health := provider_health.admit(config)).state is circuit.State.OPEN:
        detail = f": {config.health_message}" if config.health_message else ""
        problem = (
            "provider_unhealthy",
            f"{label} is failing its health check{detail} "
            f"(tried again in {health.retry_after or 0:.0f}s).",
        )
    elif (
        breaker := circuit.admit(provider_id, build_adapter(provider_id, config).base_url)
    ).state is circuit.State.OPEN:
        problem = (
            "provider_circuit_open",
            f"{label} is failing repeatedly; circuit open "
            f"(tried again in {breaker.retry_after or 0:.0f}s).",
        )
    return config, problem


def choose_route(run: Run) -> Route:
    """Where the run goes: its provider when available, else a fallback of
    the same input kind. Raises ``NoRoute`` when there is none."""
    provider_id = run.provider_id
    config, problem = availability(run, provider_id)
    if problem is None:
        return Route(provider_id, config)
    if run.kind == RunKind.PROMPT:
        return _agent_fallback(run, provider_id, problem)
    allowed = config.allow_fallback_to_local if config else run.project.allow_fallback_to_local
    if allowed and run.project.allow_fallback_to_local:
        return Route(LOCAL_PROVIDER_ID, None, provider_id, *problem)
    raise NoRoute(*problem)


def _agent_fallback(run: Run, provider_id: str, problem: tuple[str, str]) -> Route:
    """The first available prompt provider of the project's agent fallback
    chain; else ``NoRoute("provider_unavailable")`` with why each was skipped."""
    reason, message = problem
    skipped: list[str] = []
    for candidate in run.project.agent_fallback_chain or ():
        if candidate == provider_id:
            continue
        try:
            if adapter_class(candidate).input_kind != RunKind.PROMPT:
                continue  # never a command provider, whatever the chain says
        except UnknownProvider:
            continue
        candidate_config, candidate_problem = availability(run, candidate)
        if candidate_problem is None:
            return Route(candidate, candidate_config, provider_id, reason, message)
        skipped.append(candidate_problem[1])
    detail = " ".join([message, *(f"Fallback skipped: {s}" for s in skipped)])
    raise NoRoute("provider_unavailable", detail, cause=reason)


def run_spec(run: Run) -> RunSpec:
    return RunSpec(
        run_id=run.pk,
        dispatch_key=run.dispatch_key,
        command=run.text,
        kind=run.kind,
        project_id=run.project_id,
        project_name=run.project.name,
        workspace_root=run.project.workspace_root,
        cwd=run.cwd,
        env_profile=run.env_profile,
        feature_id=run.feature_id,
        created_at=run.created_at.timestamp() if run.created_at else None,
    )


def dispatch_run(run_id: int) -> str:
    """Task body: send a queued run to its provider. Returns what happened."""
    run = Run.objects.select_related("project").get(pk=run_id)
    if run.provider_run_id:
        return "skipped"
    if run.status == RunStatus.CANCELING:
        return _settle_canceled_dispatch(run)
    if run.status != RunStatus.QUEUED:
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
    if run.follow_up_of_id:
        return dispatch_follow_up(run)
    try:
        route = choose_route(run)
    except UnknownProvider as exc:
        # The provider was removed from the registry after the run was created.
        transition(run, RunStatus.FAILED, reason="unknown_provider", message=exc.message)
        return "failed"
    except NoRoute as no_route:
        _fail_unrouted(run, no_route)
        return "failed"
    if route.fallback_from:
        _record_fallback(run, route)
    adapter = build_adapter(route.provider_id, route.config)
    return _send(run, adapter)


def parent_ref(parent: Run) -> RunRef:
    return RunRef(parent.pk, parent.provider_run_id, parent.dispatch_key, parent.provider_state)


def follow_up_adapter(run: Run) -> ProviderAdapter:
    """The adapter of the agent a follow-up goes to: the run's own provider,
    never a fallback. Raises ``NoRoute("provider_unavailable")``."""
    config, problem = availability(run, run.provider_id, rollout=False)
    if problem is not None:
        raise NoRoute("provider_unavailable", problem[1], cause=problem[0])
    return build_adapter(run.provider_id, config)


def store_follow_up(run: Run, parent: Run, adapter: ProviderAdapter, result: DispatchResult):
    """Record the provider's new unit of work on the follow-up run. When it
    continues the parent's provider run (a Devin session), the log cursor
    continues too, so the earlier transcript is not stored twice."""
    if result.provider_run_id == parent.provider_run_id:
        parent.refresh_from_db(fields=["log_cursor"])
        Run.objects.filter(pk=run.pk).update(log_cursor=dict(parent.log_cursor or {}))
    _store_result(run, adapter, result, recovered=False)


def dispatch_follow_up(run: Run) -> str:
    """An approved follow-up: sent once to the parent's agent. Not retried on
    a transient error (a re-sent follow-up could start the work twice); the
    run fails visibly instead and the user sends it again."""
    parent = Run.objects.get(pk=run.follow_up_of_id)
    try:
        adapter = follow_up_adapter(run)
    except NoRoute as no_route:
        _fail_unrouted(run, no_route)
        return "failed"
    if run.dispatch_attempts:
        # A re-delivered task: the earlier attempt may have reached the agent,
        # and a follow-up has no key to look it up by. Never send it twice.
        transition(
            run,
            RunStatus.FAILED,
            reason="dispatch_unconfirmed",
            message="An earlier attempt to send this follow-up may have reached the agent; "
            "check it there before following up again.",
        )
        return "failed"
    Run.objects.filter(pk=run.pk).update(dispatch_attempts=F("dispatch_attempts") + 1)
    try:
        result = adapter.follow_up(parent_ref(parent), run.prompt)
    except ProviderConflict as exc:
        transition(run, RunStatus.FAILED, reason=exc.code, message=exc.message)
        return "failed"
    except (ConnectorError, ConfigurationError) as exc:
        message = project_redactor(run.project_id).scrub(getattr(exc, "message", str(exc)))
        transition(run, RunStatus.FAILED, reason="dispatch_failed", message=message)
        return "failed"
    store_follow_up(run, parent, adapter, result)
    return "dispatched"


def _fail_unrouted(run: Run, no_route: NoRoute) -> None:
    transition(run, RunStatus.FAILED, reason=no_route.code, message=no_route.message)
    if no_route.code == "provider_unavailable":
        audit(
            run.pk,
            "provider_unavailable",
            no_route.message,
            providerId=run.provider_id,
            reason=no_route.cause,
            agentFallbackChain=list(run.project.agent_fallback_chain or ()),
        )


def _record_fallback(run: Run, route: Route) -> None:
    """Move the run to the fallback provider, with an audit event that says
    why and whether an approval carries over (it does: same kind of work)."""
    Run.objects.filter(pk=run.pk).update(
        provider_id=route.provider_id, fallback_from_provider_id=route.fallback_from
    )
    run.provider_id, run.fallback_from_provider_id = route.provider_id, route.fallback_from
    approved_by = run.approved_by.get_username() if run.approved_by_id else ""
    approval = f" The approval by {approved_by} carries over." if approved_by else ""
    if route.provider_id == LOCAL_PROVIDER_ID:
        event, text = "fallback_to_local", route.fallback_message
    else:
        event = "fallback_to_provider"
        text = f"{route.fallback_message} Falling back to {adapter_class(route.provider_id).label}."
    audit(
        run.pk,
        event,
        text + approval,
        fromProviderId=route.fallback_from,
        reason=route.fallback_reason,
        **({"toProviderId": route.provider_id} if event == "fallback_to_provider" else {}),
        **({"approvalCarriedOver": True, "approvedBy": approved_by} if approved_by else {}),
    )


def _send(run: Run, adapter: ProviderAdapter) -> str:
    if adapter.input_kind != run.kind:
        # The last guard: whatever routing decided, prose never reaches a shell
        # and a command line never reaches an agent.
        transition(
            run,
            RunStatus.FAILED,
            reason="kind_mismatch",
            message=f"{adapter.label} takes a {adapter.input_kind}, this run is a {run.kind}.",
        )
        return "failed"
    spec = run_spec(run)
    earlier_attempts = run.dispatch_attempts
    # Persist the attempt before the provider can create anything, and only
    # while the run is still queued: a cancel that got in first wins, and one
    # that comes later sees the attempt and waits for the provider run id.
    attempt = Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED, provider_run_id="")
    if not attempt.update(dispatch_attempts=F("dispatch_attempts") + 1):
        return "skipped"
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
        if isinstance(exc, DispatchUnconfirmed):
            # Accepted but not identifiable: never sent again (no idempotency key).
            reason = "dispatch_unconfirmed"
        run.refresh_from_db(fields=["status"])
        if isinstance(exc, AuthError | ConfigurationError) and adapter.kind == "external":
            _mark_config_failing(run, adapter, message)
        transition(run, RunStatus.FAILED, reason=reason, message=message)
        return "failed"
    circuit.record(adapter.provider_id, adapter.base_url, None)
    if adapter.kind == "external":
        provider_health.mark_healthy(
            run.project_id, adapter.provider_id, f"{adapter.label} accepted a run."
        )
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
    if adapter.kind != "external":
        return
    if run.status == RunStatus.CANCELING:
        # Canceled while the provider was creating it: the cancel waited for
        # this id. The cancel task confirms it or leaves it to the reconciler.
        from execution.services import cancel_external_run

        cancel_external_run(run.pk)
    elif run.status == RunStatus.CANCELED:
        # Canceled in the instant before the attempt was recorded: the run is
        # already over here; stop the external one too.
        ref = RunRef(run.pk, result.provider_run_id, run.dispatch_key, dict(result.provider_state))
        try:
            adapter.cancel(ref)
        except ConnectorError as exc:
            logger.warning("cancel after late dispatch of run %s failed: %s", run.pk, exc)


def _settle_canceled_dispatch(run: Run) -> str:
    """A ``canceling`` run whose dispatch was interrupted before its provider
    run id was stored: find the external run the dispatch may have created
    (never create one) and cancel it; when there is none, the run is over."""
    adapter = build_adapter(run.provider_id, get_config(run.project_id, run.provider_id))
    redactor = project_redactor(run.project_id)
    try:
        result = adapter.recover_dispatch(run_spec(run)) if run.dispatch_attempts else None
    except TransientError as exc:
        delay = max(DISPATCH_RETRY_S, exc.retry_after or 0.0)
        Run.objects.filter(pk=run.pk).update(
            last_sync_error=redactor.scrub(exc.message),
            next_reconcile_at=timezone.now() + timedelta(seconds=delay),
        )
        return "retry_scheduled"
    except (ConnectorError, ConfigurationError) as exc:
        message = redactor.scrub(getattr(exc, "message", str(exc)))
        transition(
            run,
            RunStatus.CANCELED,
            reason="canceled_by_user",
            message=f"canceled; the provider run could not be looked up: {message}",
        )
        return "canceled"
    if result is None:
        transition(
            run, RunStatus.CANCELED, reason="canceled_by_user", message="canceled before it started"
        )
        return "canceled"
    _store_result(run, adapter, result, True)
    return "recovered"


def _dispatch_failed_transiently(
    run: Run, adapter: ProviderAdapter, message: str, exc: TransientError
) -> str:
    # Rate limits do not count as outages (connectors.circuit.counts_as_outage).
    circuit.record(adapter.provider_id, adapter.base_url, exc, message)
    run.refresh_from_db(fields=["dispatch_attempts", "status"])
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
        # The provider could not be reached: never "in sync" beside an error.
        sync_status=SyncStatus.STALE,
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
    provider_health.mark_failing(run.project_id, adapter.provider_id, message)
