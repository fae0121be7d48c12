"""Talking to an agent again: answer a waiting run, follow up a finished one.

* ``send_message``: a run whose agent waits for its user (canonical
  ``waiting``, e.g. Devin's ``blocked``) gets the answer; the run stays the
  same run and shows ``running`` once the next poll sees the agent working.
* ``follow_up``: a finished prompt run gets new work on the same agent (a
  Cursor run on the existing agent, a message to the same Devin session). That
  work is a new canonical run linked by ``follow_up_of``; the finished run
  stays finished.

Both are checked by the prompt policy and audited, and raise
``ActionNotAllowed`` (API: 409) when the provider or the run's state does not
allow them, with the provider's reason as the code (``agent_busy``,
``session_ended``, ...). A reply is part of an approved, running conversation:
the project's "every agent run needs approval" switch does not apply to it
again, but a reply that matches a prompt pattern is refused
(``approval_required``), since a waiting agent cannot wait for an approver
through this API. A follow-up is a new run and goes through the approval gate
like any other: when it needs approval it waits, and is sent once approved.
"""

from __future__ import annotations

from django.utils import timezone

from connectors.configs import project_redactor
from connectors.errors import ConfigurationError, ConnectorError, ProviderConflict
from connectors.registry import adapter_class
from execution import dispatch, policy_gate
from execution.events import audit
from execution.models import Run, RunKind
from execution.services import ActionNotAllowed, RunRequest, actor_name, record_run
from execution.states import RunStatus

# A follow-up continues an agent whose earlier work is over, whatever its outcome.
FOLLOW_UP_STATUSES = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED})


class ProviderCallFailed(Exception):
    """The provider failed the call (API: 502 ``provider_error``); the message
    is scrubbed of the project's credentials."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def _require_follow_ups(run: Run, what: str) -> None:
    cls = adapter_class(run.provider_id)
    if run.kind != RunKind.PROMPT or not cls.capabilities().supports_follow_up:
        raise ActionNotAllowed(f"{cls.label} runs do not take {what}.", code="unsupported")
    if not run.provider_run_id:
        raise ActionNotAllowed(
            f"This run never reached {cls.label}; there is no agent to talk to.",
            code="invalid_state",
        )


def _adapter(run: Run):
    try:
        return dispatch.follow_up_adapter(run)
    except dispatch.NoRoute as no_route:
        raise ActionNotAllowed(no_route.message, code="provider_unavailable") from None


def _provider_error(run: Run, exc: Exception) -> ProviderCallFailed:
    message = getattr(exc, "message", str(exc))
    return ProviderCallFailed(project_redactor(run.project_id).scrub(message))


def send_message(run: Run, user, text: str) -> Run:
    """Send ``text`` to the agent of a waiting run. Raises ``PromptRejected``
    (400), ``ActionNotAllowed`` (409) and ``ProviderCallFailed`` (502)."""
    actor = actor_name(user)
    if run.status != RunStatus.WAITING:
        raise ActionNotAllowed(
            f"Only a run waiting for its user takes a message (it is {run.status})."
        )
    _require_follow_ups(run, "messages")
    policy_gate.check_prompt(run.project, text)
    decision = policy_gate.evaluate_prompt_for(run.project, text, reply=True)
    if decision.verdict != "allow":
        audit(
            run.pk,
            "message_refused",
            "; ".join(decision.messages),
            actor=actor,
            reasonCodes=list(decision.reason_codes),
        )
        raise ActionNotAllowed(
            "This message needs an approval ("
            + ", ".join(decision.reason_codes)
            + "); send it as a follow-up once the run has finished.",
            code="approval_required",
        )
    adapter = _adapter(run)
    try:
        adapter.send_message(dispatch.parent_ref(run), text)
    except ProviderConflict as exc:
        raise ActionNotAllowed(exc.message, code=exc.code) from None
    except (ConnectorError, ConfigurationError) as exc:
        raise _provider_error(run, exc) from None
    audit(
        run.pk,
        "message_sent",
        project_redactor(run.project_id).scrub(text),
        actor=actor,
        providerId=run.provider_id,
    )
    # The agent is working again: let the next sweep see it soon.
    Run.objects.filter(pk=run.pk).update(next_reconcile_at=timezone.now())
    return run


def follow_up(run: Run, user, prompt: str) -> Run:
    """A new run of ``prompt`` on the agent of the finished ``run``. Raises
    ``PromptRejected`` (400), ``ActionNotAllowed`` (409) and
    ``ProviderCallFailed`` (502); nothing is recorded when it raises."""
    actor = actor_name(user)
    if run.status not in FOLLOW_UP_STATUSES:
        raise ActionNotAllowed(
            f"Only a finished run takes a follow-up (it is {run.status}); "
            "answer a waiting run with a message."
        )
    _require_follow_ups(run, "follow-ups")
    project = run.project
    policy_gate.check_prompt(project, prompt)
    decision = policy_gate.evaluate_prompt_for(project, prompt)
    request = RunRequest(
        prompt=prompt,
        provider_id=run.provider_id,
        feature_id=run.feature_id,
        recommendation_rule_id=run.recommendation_rule_id,
    )
    if decision.verdict != "allow":
        # Awaiting approval (or blocked): recorded now, sent once approved.
        new_run, _ = record_run(
            project, user, request, run.provider_id, RunKind.PROMPT, prompt, decision, None, run
        )
    else:
        adapter = _adapter(run)
        # The provider first: a busy agent or an ended session is a 409 for
        # the caller, and no run is recorded for work that never started.
        try:
            result = adapter.follow_up(dispatch.parent_ref(run), prompt)
        except ProviderConflict as exc:
            audit(run.pk, "follow_up_refused", exc.message, actor=actor, code=exc.code)
            raise ActionNotAllowed(exc.message, code=exc.code) from None
        except (ConnectorError, ConfigurationError) as exc:
            raise _provider_error(run, exc) from None
        new_run, _ = record_run(
            project,
            user,
            request,
            run.provider_id,
            RunKind.PROMPT,
            prompt,
            decision,
            None,
            run,
            dispatch=False,
        )
        dispatch.store_follow_up(new_run, run, adapter, result)
        new_run.refresh_from_db()
    audit(
        run.pk,
        "followed_up",
        f"Followed up as run {new_run.pk} by {actor}",
        actor=actor,
        newRunId=new_run.pk,
    )
    return new_run
