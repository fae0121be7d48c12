"""Turning a sweep's poll results into writes (the sweep's thread only).

``ResultWriter.write`` plans each result (``_plan``: the fields of one
compare-and-swap UPDATE that also clears the lease, the events to append, the
transition if the provider reports a new status) and stores the plans:
unchanged runs in a few batched UPDATEs (``claims.write_leased``), runs
whose only news is a new status together (``transitions.transition_many``),
the others one by one through ``transition()``. Here live the rules for what
an answer means: in sync, unknown status, an error (``error`` sync status,
retried every ``RECONCILE_ERROR_INTERVAL_S``), a transient failure (backoff,
``stale`` after ``STALE_AFTER_S``), a canceling run's report, a status the
transition table does not allow, and log lines (redacted, stored before the
status change they explain; for a batch-polled run they follow it, read in the
lane behind the other status reads). When a run is polled next is
``cadence``'s business (request budget, webhooks). It also counts outcomes for the sweep's report
and metrics, and marks a provider config failing when its credential is
rejected.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from connectors import health as provider_health
from connectors.base import RunState
from connectors.configs import project_redactor
from connectors.errors import AuthError, TransientError
from connectors.redaction import Redactor
from execution import cancels, metrics
from execution.backoff import reconcile_backoff
from execution.events import NewEvent, append_events
from execution.models import Run, Stream
from execution.reconcile.cadence import Cadence
from execution.reconcile.claims import LeasedWrite, release, write_leased
from execution.reconcile.poll import error_message
from execution.reconcile.types import LOGGER_NAME, PollResult, SweepReport, Target
from execution.states import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    RunStatus,
    SyncStatus,
)
from execution.transitions import InvalidTransition, Move, transition, transition_many

logger = logging.getLogger(LOGGER_NAME)

MAX_ERROR_CHARS = 2000
# Failed polls in a row after which a run is stale, however short the time.
STALE_AFTER_FAILURES = 2
_LEASE_CLEARED = {"lease_owner": "", "lease_expires_at": None}


class ResultWriter:
    """Writes one sweep's results as the lease holder ``worker_id``, counting
    into the sweep's ``report`` and metric ``counts``."""

    def __init__(
        self, worker_id: str, report: SweepReport, counts: Counter[metrics.CounterKey]
    ) -> None:
        conf = settings.EXECUTION
        self.worker_id = worker_id
        self.report = report
        self.counts = counts
        self.interval_s = float(conf["RECONCILE_INTERVAL_S"])
        self.error_interval_s = float(conf["RECONCILE_ERROR_INTERVAL_S"])
        self.stale_after_s = float(conf["STALE_AFTER_S"])
        self.redactors: dict[int, Redactor] = {}
        self.failing_configs: dict[tuple[int, str], str] = {}
        self.answered_configs: set[tuple[int, str]] = set()
        self.configs_cleared: set[tuple[int, str]] = set()
        self.cadence = Cadence(self.interval_s)

    def write(self, results: list[PollResult]) -> None:
        """Store ``results``: unchanged runs in batched compare-and-swap UPDATEs,
        runs with a new status or events one by one through ``transition()``.
        A write whose run has changed status or lease meanwhile is lost (counted
        in ``report.lost_writes``; a lease still held is released)."""
        now = timezone.now()
        bulk: list[LeasedWrite] = []
        one_by_one: list[_Plan] = []
        for result in results:
            if result.target.logs_only:
                self._write_logs_only(result)
                continue
            plan = self._plan(result, now)
            if plan.new_status or plan.events:
                one_by_one.append(plan)
            else:
                bulk.append(LeasedWrite(plan.run.pk, plan.run.status, plan.fields))
        if bulk:
            with transaction.atomic():
                written = write_leased(self.worker_id, bulk)
            self.report.lost_writes += len(bulk) - written
        moves = [plan for plan in one_by_one if plan.new_status and not plan.events]
        if moves:
            self._write_moves(moves)
        for plan in one_by_one:
            if not plan.new_status or plan.events:
                self._write_one(plan)

    def _write_moves(self, plans: list[_Plan]) -> None:
        """Runs whose only news is a new status (runs that ended, their last
        lines to follow): all together through ``transition_many``, a few
        statements instead of five per run, with the compare-and-swap on status
        and lease that ``_write_one`` makes."""
        moves = [
            Move(
                plan.run,
                plan.new_status,
                plan.reason,
                plan.message,
                {**plan.fields, **plan.transition_fields},
            )
            for plan in plans
        ]
        with transaction.atomic():
            applied = transition_many(moves, lease_owner=self.worker_id)
        moved = {move.run.pk for move in applied}
        lost = [plan.run.pk for plan in plans if plan.run.pk not in moved]
        if lost:
            release(self.worker_id, lost)
            self.report.lost_writes += len(lost)
        for move in applied:
            self.report.changed += 1
            self.counts[(metrics.TRANSITIONS, move.run.provider_id, move.new_status)] += 1

    def _write_one(self, plan: _Plan) -> None:
        run = plan.run
        with transaction.atomic():
            stored = Run.objects.filter(
                pk=run.pk, status=run.status, lease_owner=self.worker_id
            ).update(**plan.fields)
            if not stored:
                release(self.worker_id, [run.pk])
                self.report.lost_writes += 1
                return
            if plan.events:
                append_events(run.pk, plan.events)
            if plan.new_status:
                try:
                    moved = transition(
                        run,
                        plan.new_status,
                        reason=plan.reason,
                        message=plan.message,
                        **plan.transition_fields,
                    )
                except InvalidTransition:  # _plan checked the table; keep it safe anyway
                    moved = False
                if moved:
                    self.report.changed += 1
                    self.counts[(metrics.TRANSITIONS, run.provider_id, plan.new_status)] += 1

    def _write_logs_only(self, result: PollResult) -> None:
        """Lines read after their run's status was stored (a batch poll): kept
        only if nobody stored output for the run meanwhile (the cursor is still
        the one they were read from); no lease, no status."""
        run = result.target.run
        plan = _Plan(run, fields={})
        self._plan_logs(result, self._redactor(run.project_id), plan)
        if not plan.fields:
            return
        with transaction.atomic():
            stored = Run.objects.filter(pk=run.pk, log_cursor=run.log_cursor or {}).update(
                **plan.fields
            )
            if stored and plan.events:
                append_events(run.pk, plan.events)

    def _plan(self, result: PollResult, now: datetime) -> _Plan:
        run = result.target.run
        provider_id = run.provider_id
        plan = _Plan(run, fields=dict(_LEASE_CLEARED))
        if result.skipped:
            plan.fields.update(self._transient(run, now, result.skipped, result.retry_after))
            self._count(provider_id, "skipped", result.skip_kind, plan)
            return plan
        self.report.polled += 1
        self._plan_cancel(result, now, plan)
        if result.error is not None:
            return self._plan_error(result, now, plan)
        state = result.state
        assert state is not None
        redactor = self._redactor(run.project_id)
        raw = state.provider_status_raw[:200]
        if state.status is None:
            plan.fields.update(
                provider_status_raw=raw,
                sync_status=SyncStatus.ERROR,
                last_sync_error=redactor.scrub(f"unknown provider status {raw!r}"),
                sync_failing_since=run.sync_failing_since or now,
                next_reconcile_at=now + timedelta(seconds=self.error_interval_s),
            )
            self._count(provider_id, "unknown_status", "unknown_status", plan)
        else:
            plan.fields.update(
                provider_status_raw=raw,
                sync_status=SyncStatus.IN_SYNC,
                last_sync_error="",
                sync_failing_since=None,
                reconcile_attempts=0,
                last_reconciled_at=now,
                next_reconcile_at=self.cadence.next_poll_at(result.target, result.cost, now),
            )
            self.counts[(metrics.POLLS, provider_id, SyncStatus.IN_SYNC)] += 1
            self.answered_configs.add((run.project_id, provider_id))
            if state.provider_url and state.provider_url != run.provider_url:
                plan.fields["provider_url"] = state.provider_url[:1000]
            if state.exit_code is not None and state.exit_code != run.exit_code:
                plan.transition_fields["exit_code"] = state.exit_code
            self._plan_status(result.target, state, raw, redactor, plan)
            if plan.transition_fields and not plan.new_status:
                plan.fields.update(plan.transition_fields)
        self._plan_logs(result, redactor, plan)
        return plan

    def _plan_cancel(self, result: PollResult, now: datetime, plan: _Plan) -> None:
        """A cancel sent with this poll: accepted (the run will end canceled;
        at once if the answer says it is over), or refused (sent again after
        a backoff)."""
        run = result.target.run
        adapter = result.target.adapter
        label = adapter.label if adapter is not None else run.provider_id
        if result.cancel_error is not None:
            message = self._redactor(run.project_id).scrub(error_message(result.cancel_error))
            fields = cancels.refused_fields(run, message, now)
            plan.fields.update(fields)
            retry_s = (fields["cancel_next_at"] - now).total_seconds()
            plan.events.append(
                NewEvent(
                    Stream.SYSTEM,
                    "cancel_failed",
                    text=f"{label} did not accept the cancel: {message} "
                    f"(attempt {fields['cancel_attempts']}; sent again in {retry_s:.0f}s)",
                    payload={
                        "kind": getattr(result.cancel_error, "kind", "internal"),
                        "attempt": fields["cancel_attempts"],
                    },
                )
            )
            self.report.cancels_sent += 1
            return
        answer = result.cancel
        if answer is None:
            return
        self.report.cancels_sent += 1
        if not answer.accepted:
            return  # it had ended on its own: the poll's status says how
        plan.fields.update(cancels.accepted_fields())
        plan.cancel_accepted = True
        plan.events.append(
            NewEvent(Stream.SYSTEM, "cancel_accepted", text=f"{label} accepted the cancel.")
        )
        if answer.confirmed and RunStatus.CANCELED in TRANSITIONS.get(run.status, frozenset()):
            plan.new_status = RunStatus.CANCELED
            plan.message = f"{label} confirmed the cancel"
            plan.reason = "cancel_confirmed"
            plan.fields["next_reconcile_at"] = None

    def _plan_status(
        self, work: Target, state: RunState, raw: str, redactor: Redactor, plan: _Plan
    ) -> None:
        run, target = work.run, state.status
        if plan.new_status:
            return  # the cancel answer already decided
        if run.status == RunStatus.CANCELING and target in TERMINAL_STATUSES:
            target = cancels.final_status(run, target, accepted_now=plan.cancel_accepted)
        if target == run.status:
            return
        if target in TRANSITIONS.get(run.status, frozenset()):
            plan.new_status = target
            label = work.adapter.label
            plan.message = redactor.scrub(
                f"{label} reports {raw!r}" + (f": {state.message}" if state.message else "")
            )
            if target in TERMINAL_STATUSES:
                plan.fields["next_reconcile_at"] = None
            return
        if run.status == RunStatus.CANCELING and target in ACTIVE_STATUSES:
            return  # the provider has not honoured the cancel yet: keep waiting
        if raw == run.provider_status_raw:
            return  # already reported when the provider first said so
        logger.warning(
            "run %s: provider %s reports %r (%s), not allowed from %s; status kept",
            run.pk,
            run.provider_id,
            raw,
            target,
            run.status,
        )
        plan.events.append(
            NewEvent(
                Stream.SYSTEM,
                "unexpected_provider_status",
                text=f"Provider reports {raw!r} ({target}), which cannot follow {run.status}; "
                f"the run keeps its status.",
                payload={"status": run.status, "reported": target, "providerStatusRaw": raw},
            )
        )

    def _plan_error(self, result: PollResult, now: datetime, plan: _Plan) -> _Plan:
        run = result.target.run
        error = result.error
        assert error is not None
        message = self._redactor(run.project_id).scrub(error_message(error))
        kind = getattr(error, "kind", "internal")
        if isinstance(error, TransientError):
            plan.fields.update(self._transient(run, now, message, error.retry_after))
            self._count(run.provider_id, "transient", kind, plan)
            return plan
        plan.fields.update(
            sync_status=SyncStatus.ERROR,
            last_sync_error=message[:MAX_ERROR_CHARS],
            sync_failing_since=run.sync_failing_since or now,
            reconcile_attempts=run.reconcile_attempts + 1,
            next_reconcile_at=now + timedelta(seconds=self.error_interval_s),
        )
        if isinstance(error, AuthError):
            self.failing_configs[(run.project_id, run.provider_id)] = message
        self._count(run.provider_id, "error", kind, plan)
        return plan

    def _transient(
        self, run: Run, now: datetime, message: str, retry_after: float | None
    ) -> dict[str, Any]:
        """A poll that could not reach the provider (or was not sent: circuit
        open, provider hanging). ``stale`` after ``STALE_AFTER_FAILURES``
        failed polls in a row or ``STALE_AFTER_S``, whichever comes first.
        Before that a run that was in sync stays ``in_sync`` and shows no
        error: a sync error is never shown next to ``in_sync``."""
        attempts = run.reconcile_attempts + 1
        failing_since = run.sync_failing_since or now
        stale = (
            attempts >= STALE_AFTER_FAILURES
            or (now - failing_since).total_seconds() >= self.stale_after_s
        )
        if stale:
            sync_status, error = SyncStatus.STALE, message[:MAX_ERROR_CHARS]
        elif run.sync_status == SyncStatus.IN_SYNC:
            sync_status, error = SyncStatus.IN_SYNC, ""
        else:  # already stale or error: it stays so, with the latest error
            sync_status, error = run.sync_status, message[:MAX_ERROR_CHARS]
        return {
            "reconcile_attempts": attempts,
            "sync_failing_since": failing_since,
            "sync_status": sync_status,
            "last_sync_error": error,
            "next_reconcile_at": now + timedelta(seconds=reconcile_backoff(attempts, retry_after)),
        }

    def _plan_logs(self, result: PollResult, redactor: Redactor, plan: _Plan) -> None:
        run = result.target.run
        if result.log_error is not None:
            kind = getattr(result.log_error, "kind", "internal")
            self.counts[(metrics.ERRORS, run.provider_id, f"logs_{kind}")] += 1
            logger.warning(
                "run %s: fetching logs failed: %s",
                run.pk,
                redactor.scrub(error_message(result.log_error)),
            )
        if result.log_cursor is None and result.logs_fetched_at is None:
            return
        if result.log_cursor is not None:
            plan.fields["log_cursor"] = result.log_cursor
        if result.logs_fetched_at is not None:
            plan.fields["logs_fetched_at"] = result.logs_fetched_at
        # Log lines first: they were produced before the status change they explain.
        plan.events[:0] = [
            NewEvent(
                entry.stream,
                "output",
                text=redactor.scrub(entry.text),
                payload=redactor.scrub_obj(dict(entry.payload)),
            )
            for entry in result.entries
        ]

    def _count(self, provider_id: str, outcome: str, kind: str, plan: _Plan) -> None:
        self.counts[(metrics.POLLS, provider_id, outcome)] += 1
        self.counts[(metrics.ERRORS, provider_id, kind)] += 1
        self.report.errors[kind] = self.report.errors.get(kind, 0) + 1
        if plan.fields.get("sync_status") == SyncStatus.STALE:
            self.report.stale += 1

    def mark_configs_failing(self) -> None:
        """Provider health as the polls found it: a rejected credential marks
        the project's config failing, and a poll answered with a status marks
        a failing config healthy again (once per sweep and config)."""
        for (project_id, provider_id), message in self.failing_configs.items():
            provider_health.mark_failing(project_id, provider_id, message)
            self.answered_configs.discard((project_id, provider_id))
        for project_id, provider_id in self.answered_configs - self.configs_cleared:
            provider_health.mark_healthy(project_id, provider_id, "Runs are polled again.")
            self.configs_cleared.add((project_id, provider_id))
        self.failing_configs.clear()
        self.answered_configs.clear()

    def _redactor(self, project_id: int) -> Redactor:
        if project_id not in self.redactors:
            self.redactors[project_id] = project_redactor(project_id)
        return self.redactors[project_id]


@dataclass
class _Plan:
    """What to write for one run: ``fields`` in a compare-and-swap UPDATE (with
    the lease cleared), then ``events``, then the transition if any."""

    run: Run
    fields: dict[str, Any]
    new_status: str = ""
    message: str = ""
    transition_fields: dict[str, Any] = field(default_factory=dict)
    events: list[NewEvent] = field(default_factory=list)
    cancel_accepted: bool = False
    reason: str = "provider_status"
