"""What a run page offers: the actions the run's state and the caller's role
allow, and the chain of runs it belongs to. The API enforces the same rules
(403 below the role, 409 for the state); the page only hides what would fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from ccdash.roles import Action, role_allows
from execution.models import Run
from execution.states import (
    ACTIVE_STATUSES,
    CANCELABLE_STATUSES,
    RETRYABLE_STATUSES,
    TERMINAL_STATUSES,
    RunStatus,
)

PROMPT_PROVIDERS = frozenset({"cursor", "devin"})


@dataclass(frozen=True)
class RunActions:
    approve: bool = False
    approve_note: str = ""  # why an approver sees no Approve (their own run)
    cancel: bool = False
    cancel_again: bool = False  # canceling, the provider has not confirmed it
    retry: bool = False
    run_again: bool = False
    refresh: bool = False
    reply: bool = False
    follow_up: bool = False

    @property
    def any(self) -> bool:
        return any(
            (
                self.approve,
                self.cancel,
                self.cancel_again,
                self.retry,
                self.run_again,
                self.refresh,
                self.reply,
                self.follow_up,
            )
        )


def input_kind(provider_cls) -> str:
    """``command`` or ``prompt``: what the provider takes (declared by the
    adapter where it says so)."""
    declared = getattr(provider_cls, "input_kind", None)
    if declared:
        return str(getattr(declared, "value", declared))
    return "prompt" if getattr(provider_cls, "provider_id", "") in PROMPT_PROVIDERS else "command"


def supports_follow_up(provider_cls) -> bool:
    caps = provider_cls.capabilities() if provider_cls else None
    return bool(getattr(caps, "supports_follow_up", False))


def cancel_unconfirmed(run: Run) -> bool:
    """A cancel was asked for and the provider has not accepted it yet (the
    reconciler keeps re-sending it; a person may send it again)."""
    return bool(run.cancel_unconfirmed)


def run_actions(run: Run, user, role: str | None, provider_cls) -> RunActions:
    status = run.status
    own = run.created_by_id is not None and run.created_by_id == user.pk
    may_approve = role_allows(role, Action.APPROVE) and status == RunStatus.AWAITING_APPROVAL
    self_blocked = may_approve and own and not getattr(run.project, "allow_self_approval", False)
    follow_up_ok = supports_follow_up(provider_cls) and role_allows(role, Action.CREATE_RUN)
    return RunActions(
        approve=may_approve and not self_blocked,
        approve_note="You created this run: another approver approves it." if self_blocked else "",
        # While canceling, a cancel is in flight: offered again only when the
        # provider refused or has not confirmed it.
        cancel=role_allows(role, Action.CANCEL)
        and status in CANCELABLE_STATUSES
        and status != RunStatus.CANCELING,
        cancel_again=role_allows(role, Action.CANCEL)
        and status == RunStatus.CANCELING
        and cancel_unconfirmed(run),
        retry=role_allows(role, Action.RETRY) and status in RETRYABLE_STATUSES,
        run_again=role_allows(role, Action.CREATE_RUN) and status in TERMINAL_STATUSES,
        refresh=role_allows(role, Action.RECONCILE)
        and run.provider_id != "local"
        and (status in ACTIVE_STATUSES or status == RunStatus.CANCELING),
        reply=follow_up_ok and status == RunStatus.WAITING,
        follow_up=follow_up_ok and status in {RunStatus.SUCCEEDED, RunStatus.FAILED},
    )


def run_chain(run: Run, limit: int = 20) -> list[Run]:
    """The runs linked to this one, oldest first: what it retried or followed
    up, back to the first, and the runs that retried or followed it up."""
    back: list[Run] = []
    current = run
    for _ in range(limit):
        parent_id = current.retry_of_id or getattr(current, "follow_up_of_id", None)
        if not parent_id:
            break
        parent = Run.objects.filter(pk=parent_id).only("id", "status", "created_at").first()
        if parent is None:
            break
        back.append(parent)
        current = parent
    forward = list(Run.objects.filter(retry_of_id=run.pk).only("id", "status", "created_at"))
    if hasattr(Run, "follow_up_of"):
        forward += list(
            Run.objects.filter(follow_up_of_id=run.pk).only("id", "status", "created_at")
        )
    chain = [*reversed(back), run, *sorted(forward, key=lambda r: r.pk)]
    return chain if len(chain) > 1 else []


def decisions(run: Run) -> list[dict[str, str]]:
    """Who rejected the run or commented on its approval, and what they said."""
    rows = run.events.filter(event_type__in=["rejected", "approval_comment"]).order_by(
        "sequence_no"
    )
    out = []
    for event in rows:
        if event.event_type == "rejected":
            text = event.text.partition(": ")[2]
            out.append({"label": "Rejected", "actor": event.actor, "text": text})
        else:
            out.append({"label": "Approval comment", "actor": event.actor, "text": event.text})
    return out
