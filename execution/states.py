"""Canonical run lifecycle (spec §3): statuses, sync statuses and the one
transition table every status change goes through."""

from __future__ import annotations

from django.db import models


class RunStatus(models.TextChoices):
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    RUNNING = "running"
    WAITING = "waiting"
    CANCELING = "canceling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    BLOCKED = "blocked"


class CancelState(models.TextChoices):
    """Where a cancel stands with the provider. ``pending``: requested, the
    provider has not accepted it yet (not sent yet, or refused: retried with
    backoff). ``accepted``: the provider took it; the run ends ``canceled``
    whatever terminal status the provider reports afterwards."""

    NONE = ""
    PENDING = "pending"
    ACCEPTED = "accepted"


class SyncStatus(models.TextChoices):
    IN_SYNC = "in_sync"
    STALE = "stale"
    ERROR = "error"


TERMINAL_STATUSES = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED, RunStatus.BLOCKED}
)
ACTIVE_STATUSES = frozenset(
    {RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING, RunStatus.CANCELING}
)
# Statuses a run can be canceled from, and the ones retry accepts.
CANCELABLE_STATUSES = ACTIVE_STATUSES | {RunStatus.AWAITING_APPROVAL}
RETRYABLE_STATUSES = frozenset({RunStatus.FAILED, RunStatus.CANCELED})

_FINISHED = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELED}

# from -> allowed targets. A provider may finish a run between two polls, so an
# active run may jump straight to any finished status.
TRANSITIONS: dict[str, frozenset[str]] = {
    RunStatus.AWAITING_APPROVAL: frozenset(
        {RunStatus.QUEUED, RunStatus.BLOCKED, RunStatus.CANCELED}
    ),
    # queued → blocked: policy is evaluated again right before dispatch.
    RunStatus.QUEUED: frozenset(
        {RunStatus.RUNNING, RunStatus.WAITING, RunStatus.CANCELING, RunStatus.BLOCKED, *_FINISHED}
    ),
    RunStatus.RUNNING: frozenset({RunStatus.WAITING, RunStatus.CANCELING, *_FINISHED}),
    RunStatus.WAITING: frozenset({RunStatus.RUNNING, RunStatus.CANCELING, *_FINISHED}),
    # A provider can finish the run before it honours the cancel.
    RunStatus.CANCELING: frozenset(_FINISHED),
    RunStatus.SUCCEEDED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELED: frozenset(),
    RunStatus.BLOCKED: frozenset(),
}


def can_transition(old: str, new: str) -> bool:
    return new in TRANSITIONS.get(old, frozenset())


def outcome_of_cancel(reported: str | None) -> str:
    """Final status of a ``canceling`` run whose provider reports it ended.

    A run that succeeded before the cancel took effect stays succeeded; any
    other end is the cancel, including failure states some providers give a
    terminated run (Devin shows ``expired`` after DELETE)."""
    return RunStatus.SUCCEEDED if reported == RunStatus.SUCCEEDED else RunStatus.CANCELED
