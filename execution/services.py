"""What users do to runs: create, approve/reject, cancel, retry.

Views and management commands call these; they enforce the state machine and
record an audit event with the actor for every action. Permission checks (who
may act) stay in the API layer; these functions check what the *run* allows
and raise ``ActionNotAllowed`` (answered as 409).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone
from django_q.tasks import async_task

from ccdash.models import Project
from connectors.base import RunRef
from connectors.configs import build_adapter, get_config, project_redactor
from connectors.errors import ConfigurationError, ConnectorError
from connectors.registry import adapter_class
from connectors.services import effective_default_provider_id
from execution import cancels, policy_gate
from execution.dispatch import enqueue_dispatch
from execution.events import NewEvent, append_events, audit
from execution.models import Run, RunKind, Stream
from execution.states import (
    CANCELABLE_STATUSES,
    RETRYABLE_STATUSES,
    CancelState,
    RunStatus,
    outcome_of_cancel,
)
from execution.transitions import transition

logger = logging.getLogger(__name__)

CANCEL_TASK = "execution.services.cancel_external_run"


class ActionNotAllowed(Exception):
    """The run's state does not allow the action (API: 409)."""

    def __init__(self, message: str, code: str = "invalid_state"):
        super().__init__(message)
        self.message = message
        self.code = code


class ActionForbidden(Exception):
    """The actor may not take this action on this run, whatever their role
    (API: 403), e.g. approving their own run (``self_approval``)."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.message = message
        self.code = code


class InvalidRunRequest(Exception):
    """The request does not fit the provider (API: 400 naming ``fields``)."""

    def __init__(self, message: str, fields: dict[str, list[str]], code: str = "invalid"):
        super().__init__(message)
        self.message = message
        self.fields = fields
        self.code = code


@dataclass(frozen=True)
class RunRequest:
    """What to run. Command providers take ``command``; prompt providers take
    ``prompt`` (or, as older clients send it, ``command``)."""

    command: str = ""
    prompt: str = ""
    provider_id: str = ""
    feature_id: str = ""
    recommendation_rule_id: str = ""
    cwd: str = ""
    env_profile: str = ""
    idempotency_key: str | None = None


def actor_name(user) -> str:
    return getattr(user, "username", "") or "system"


def run_input(provider_id: str, command: str, prompt: str) -> tuple[str, str]:
    """``(kind, text)`` of a request to ``provider_id``: the kind is the
    provider's. Raises ``UnknownProvider`` for an unregistered provider and
    ``InvalidRunRequest`` naming the field that does not fit: a prompt to a
    command provider, both fields at once, or neither."""
    cls = adapter_class(provider_id)
    if command and prompt:
        raise InvalidRunRequest(
            "Send either command or prompt, not both.",
            {"prompt": ["Send either command or prompt, not both."]},
        )
    if cls.input_kind == RunKind.COMMAND:
        if prompt:
            raise InvalidRunRequest(
                f"{cls.label} runs command lines, not prompts.",
                {"prompt": [f"{cls.label} runs command lines; send a command instead."]},
            )
        if not command:
            raise InvalidRunRequest(
                "A command is required.", {"command": ["This field is required."]}
            )
        return RunKind.COMMAND, command
    # Prompt providers also take ``command``: clients written before run kinds send it.
    return RunKind.PROMPT, prompt or command


def create_run(
    project: Project,
    user,
    request: RunRequest,
    *,
    retry_of: Run | None = None,
    follow_up_of: Run | None = None,
) -> tuple[Run, bool]:
    """Evaluate the policy of the run's kind and record the run; queue its
    dispatch when allowed.

    Returns ``(run, created)``; an ``idempotency_key`` already used in the
    project returns the existing run with ``created=False``. Raises
    ``UnknownProvider``, ``InvalidRunRequest`` and ``PromptRejected`` (all
    400) before anything is stored.
    """
    provider_id = request.provider_id or effective_default_provider_id(project)
    kind, text = run_input(provider_id, request.command, request.prompt)
    if kind == RunKind.PROMPT:
        policy_gate.check_prompt(project, text)
    if request.idempotency_key:
        existing = Run.objects.filter(
            project=project, idempotency_key=request.idempotency_key
        ).first()
        if existing:
            if existing.kind != kind or existing.text != text:
                raise ActionNotAllowed(
                    f"This idempotencyKey was used for a different {existing.kind}.",
                    code="idempotency_key_reused",
                )
            return existing, False
    decision = policy_gate.evaluate_text(project, kind, text, request.cwd, request.env_profile)
    return record_run(
        project, user, request, provider_id, kind, text, decision, retry_of, follow_up_of
    )


def record_run(
    project: Project,
    user,
    request: RunRequest,
    provider_id: str,
    kind: str,
    text: str,
    decision,
    retry_of: Run | None,
    follow_up_of: Run | None,
    *,
    dispatch: bool = True,
) -> tuple[Run, bool]:
    """Store the run with its policy outcome; queue it when allowed and
    ``dispatch`` (a follow-up sent by the caller's request is already out)."""
    is_prompt = kind == RunKind.PROMPT
    status = {
        "deny": RunStatus.BLOCKED,
        "requires_approval": RunStatus.AWAITING_APPROVAL,
    }.get(decision.verdict, RunStatus.QUEUED)
    actor = actor_name(user)
    try:
        with transaction.atomic():
            run = Run.objects.create(
                project=project,
                created_by=user if getattr(user, "is_authenticated", False) else None,
                kind=kind,
                command="" if is_prompt else text,
                prompt=text if is_prompt else "",
                provider_id=provider_id,
                feature_id=request.feature_id,
                recommendation_rule_id=request.recommendation_rule_id,
                # An agent works in its own checkout: cwd and env profiles are
                # the local executor's, so a prompt run keeps neither.
                cwd="" if is_prompt else request.cwd,
                env_profile="default" if is_prompt else decision.env_profile,
                idempotency_key=request.idempotency_key or None,
                policy_verdict=decision.verdict,
                risk_level=decision.risk,
                reason_codes=list(decision.reason_codes),
                requires_approval=decision.verdict == "requires_approval",
                status=status,
                status_reason="policy_denied" if status == RunStatus.BLOCKED else "",
                ended_at=timezone.now() if status == RunStatus.BLOCKED else None,
                retry_of=retry_of,
                follow_up_of=follow_up_of,
                dispatch_key=uuid.uuid4().hex,
            )
            events = [
                NewEvent(
                    Stream.SYSTEM,
                    "run_created",
                    text=f"Run created for {provider_id}; policy: {decision.verdict}",
                    payload={
                        "providerId": provider_id,
                        "kind": kind,
                        "policyVerdict": decision.verdict,
                        "riskLevel": decision.risk,
                        "reasonCodes": list(decision.reason_codes),
                        "messages": list(decision.messages),
                        "retryOfRunId": retry_of.pk if retry_of else None,
                        "followUpOfRunId": follow_up_of.pk if follow_up_of else None,
                    },
                    actor=actor,
                )
            ]
            gate_event = {
                RunStatus.BLOCKED: "policy_denied",
                RunStatus.AWAITING_APPROVAL: "approval_requested",
            }.get(status)
            if gate_event:
                events.append(
                    NewEvent(
                        Stream.SYSTEM,
                        gate_event,
                        "; ".join(decision.messages),
                        {"reasonCodes": list(decision.reason_codes)},
                        actor="policy",
                    )
                )
            append_events(run.pk, events)
            if status == RunStatus.QUEUED and dispatch:
                enqueue_dispatch(run.pk)
    except IntegrityError:
        # Two requests raced on one idempotency key, or on retrying one run
        # (unique_retry_of): the other one won and its run is the answer.
        if retry_of is not None:
            existing = Run.objects.filter(retry_of=retry_of).first()
            if existing is not None:
                return existing, False
        if request.idempotency_key:
            return Run.objects.get(project=project, idempotency_key=request.idempotency_key), False
        raise
    return run, True


def check_four_eyes(run: Run, user) -> None:
    """Raise ``ActionForbidden("self_approval")`` when ``user`` created ``run``
    and its project does not allow self-approval.

    Approving is the four-eyes act: it lets a command the policy held back
    run. Rejecting is not checked: it only stops one's own run, which the
    creator can do anyway by canceling it.
    """
    if (
        run.created_by_id is not None
        and run.created_by_id == getattr(user, "pk", None)
        and not run.project.allow_self_approval
    ):
        raise ActionForbidden(
            "You created this run, so another approver must approve it "
            "(the project does not allow self-approval).",
            "self_approval",
        )


def approve(run: Run, user) -> Run:
    if run.status != RunStatus.AWAITING_APPROVAL:
        raise ActionNotAllowed(
            f"Only a run awaiting approval can be approved (it is {run.status})."
        )
    check_four_eyes(run, user)
    now = timezone.now()
    with transaction.atomic():
        if not transition(
            run,
            RunStatus.QUEUED,
            actor=actor_name(user),
            reason="approved",
            approved_by=user,
            approved_at=now,
        ):
            raise ActionNotAllowed("The run changed meanwhile; reload it.")
        audit(run.pk, "approved", f"Approved by {actor_name(user)}", actor=actor_name(user))
        enqueue_dispatch(run.pk)
    return run


def reject(run: Run, user, comment: str = "") -> Run:
    if run.status != RunStatus.AWAITING_APPROVAL:
        raise ActionNotAllowed(
            f"Only a run awaiting approval can be rejected (it is {run.status})."
        )
    with transaction.atomic():
        if not transition(
            run,
            RunStatus.BLOCKED,
            actor=actor_name(user),
            reason="approval_rejected",
            message=comment,
        ):
            raise ActionNotAllowed("The run changed meanwhile; reload it.")
        audit(
            run.pk,
            "rejected",
            f"Rejected by {actor_name(user)}" + (f": {comment}" if comment else ""),
            actor=actor_name(user),
        )
    return run


def cancel(run: Run, user) -> Run:
    """Cancel: immediate when nothing runs yet, else ``canceling`` until the
    worker or provider confirms. For an external run the cancel is sent to the
    provider until it accepts (``execution.cancels``); asking again while it
    is ``canceling`` sends it again at once."""
    if run.status not in CANCELABLE_STATUSES:
        raise ActionNotAllowed(f"A {run.status} run cannot be canceled.")
    actor = actor_name(user)
    # An external run whose dispatch began has maybe been created already:
    # it is ``canceling`` until the dispatch knows its provider run id, then
    # the cancel is sent (execution.dispatch).
    dispatching = (
        run.status == RunStatus.QUEUED
        and not run.provider_run_id
        and run.provider_id != "local"
        and run.dispatch_attempts > 0
    )
    not_started = (
        run.status == RunStatus.AWAITING_APPROVAL
        or (run.status == RunStatus.QUEUED and not run.provider_run_id and not dispatching)
        or (run.status == RunStatus.QUEUED and run.provider_id == "local")
    )
    external = run.provider_id != "local"
    if run.status == RunStatus.CANCELING:
        if not external:
            return run  # the local worker stops it; asking again changes nothing
        with transaction.atomic():
            Run.objects.filter(pk=run.pk, status=RunStatus.CANCELING).update(
                **cancels.requested_fields(timezone.now())
            )
            audit(run.pk, "cancel_requested", f"Cancel requested again by {actor}", actor=actor)
            _send_cancel_after_commit(run.pk)
        run.refresh_from_db()
        return run
    target = RunStatus.CANCELED if not_started else RunStatus.CANCELING
    fields = cancels.requested_fields(timezone.now()) if external and not not_started else {}
    with transaction.atomic():
        if not transition(run, target, actor=actor, reason="canceled_by_user", **fields):
            raise ActionNotAllowed("The run changed meanwhile; reload it.")
        audit(run.pk, "cancel_requested", f"Cancel requested by {actor}", actor=actor)
        if target == RunStatus.CANCELING and external:
            _send_cancel_after_commit(run.pk)
    return run


def _send_cancel_after_commit(run_id: int) -> None:
    transaction.on_commit(
        lambda: async_task(CANCEL_TASK, run_id, task_name=f"cancel-{run_id}", group="cancel")
    )


def cancel_external_run(run_id: int) -> str:
    """Task body: ask the provider to stop a ``canceling`` run. A refusal is
    recorded and left to the reconciler, which sends it again with backoff."""
    run = Run.objects.select_related("project").get(pk=run_id)
    if run.status != RunStatus.CANCELING or not run.provider_run_id:
        return "skipped"
    adapter = build_adapter(run.provider_id, get_config(run.project_id, run.provider_id))
    ref = RunRef(run.pk, run.provider_run_id, run.dispatch_key, run.provider_state)
    try:
        result = adapter.cancel(ref)
    except (ConnectorError, ConfigurationError) as exc:
        message = project_redactor(run.project_id).scrub(exc.message)
        record_cancel_refused(run, adapter.label, message, getattr(exc, "kind", "configuration"))
        return "failed"
    return record_cancel_answer(run, adapter, result)


def record_cancel_refused(run: Run, label: str, message: str, kind: str) -> None:
    """The provider did not take the cancel: keep it pending, retry later."""
    fields = cancels.refused_fields(run, message, timezone.now())
    with transaction.atomic():
        if not Run.objects.filter(
            pk=run.pk, status=RunStatus.CANCELING, cancel_state=CancelState.PENDING
        ).update(**fields):
            return
        retry_s = (fields["cancel_next_at"] - timezone.now()).total_seconds()
        audit(
            run.pk,
            "cancel_failed",
            f"{label} did not accept the cancel: {message} "
            f"(attempt {fields['cancel_attempts']}; sent again in {max(retry_s, 0):.0f}s)",
            kind=kind,
            attempt=fields["cancel_attempts"],
        )


def record_cancel_answer(run: Run, adapter, result) -> str:
    """The provider answered the cancel (``CancelResult``): accepted, or the
    run had already ended on its own. Returns what happened."""
    if not result.accepted:
        if not result.confirmed:
            return "not_ended"  # neither taken nor over: the next poll tells
        raw = result.provider_status_raw or run.provider_status_raw
        target = outcome_of_cancel(adapter.map_status(raw) if raw else None)
        transition(run, target, reason="provider_status", provider_status_raw=raw)
        return target
    with transaction.atomic():
        Run.objects.filter(pk=run.pk, status=RunStatus.CANCELING).update(
            **cancels.accepted_fields()
        )
        audit(run.pk, "cancel_accepted", f"{adapter.label} accepted the cancel.")
    run.cancel_state = CancelState.ACCEPTED
    if result.confirmed:
        raw = result.provider_status_raw or run.provider_status_raw
        transition(run, RunStatus.CANCELED, reason="cancel_confirmed", provider_status_raw=raw)
        return RunStatus.CANCELED
    # The reconciler sees it end; poll soon.
    Run.objects.filter(pk=run.pk).update(next_reconcile_at=timezone.now())
    return "requested"


def retry(run: Run, user) -> Run:
    """Retry ``run`` (see ``retry_once``) and return the retry."""
    return retry_once(run, user)[0]


def retry_once(run: Run, user) -> tuple[Run, bool]:
    """Retry ``run`` as a new run linked by ``retry_of``: ``(new_run, True)``.

    A run is retried at most once (constraint ``unique_retry_of``): retrying
    it again, even concurrently, returns ``(its_retry, False)`` and records
    nothing. To try once more, retry the retry.
    """
    existing = Run.objects.filter(retry_of=run).first()
    if existing is not None:
        return existing, False
    if run.status not in RETRYABLE_STATUSES:
        raise ActionNotAllowed(
            f"Only a failed or canceled run can be retried (it is {run.status})."
        )
    new_run, created = create_run(
        run.project,
        user,
        RunRequest(
            command=run.command,
            prompt=run.prompt,
            provider_id=run.fallback_from_provider_id or run.provider_id,
            feature_id=run.feature_id,
            recommendation_rule_id=run.recommendation_rule_id,
            cwd=run.cwd,
            env_profile=run.env_profile,
        ),
        retry_of=run,
        # A follow-up is retried on the same agent, never as a fresh one.
        follow_up_of=run.follow_up_of,
    )
    if not created:
        return new_run, False
    audit(
        run.pk,
        "retried",
        f"Retried as run {new_run.pk} by {actor_name(user)}",
        actor=actor_name(user),
        newRunId=new_run.pk,
    )
    return new_run, True
