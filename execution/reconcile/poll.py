"""Asking providers (pool threads): the poll of due runs and dispatch retries.

``poll_group`` is the poll step: it takes a group of due runs of one provider
endpoint and returns one ``PollResult`` per run. Today every run is asked on
its own (``poll_one``); an adapter that can answer for many runs in one
request plugs in here, and the sweep hands it groups (``Lane.group_size``).

Nothing here raises or touches the database (a dispatch retry goes through
the dispatch pipeline, which does). What the engine keeps between polls (the
log cursor, when logs were last fetched) comes from the run's engine fields
and is handed to the adapter as an argument; the adapter's own
``provider_state`` is passed through untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta

from django.db import connections
from django.utils import timezone

from connectors.base import TERMINAL, Capabilities, RunState
from connectors.errors import ConfigurationError, ConnectorError
from connectors.http import counting
from execution import dispatch
from execution.models import Run
from execution.reconcile.cadence import batched
from execution.reconcile.claims import release
from execution.reconcile.types import LOGGER_NAME, DispatchDone, DispatchRetry, PollResult, Target
from execution.states import TRANSITIONS

logger = logging.getLogger(LOGGER_NAME)


def poll_group(targets: Sequence[Target]) -> list[PollResult]:
    """Poll ``targets`` (due runs of one endpoint); one result per target, in
    order. Never raises.

    An adapter that declares ``supports_batch_poll`` is asked once per project
    (one adapter, one credential) for all its runs (``poll_many``); their logs
    are not read here: ``logs_due`` asks the sweep to queue a logs-only read
    behind the other runs' status reads. A run the listing left out comes back
    ``unlisted``: the sweep queues a read of it alone (``Target.alone``), so
    the lane's workers read such runs side by side, not one after the other
    inside this call. Runs being canceled (see ``cadence.batched``), runs read
    alone, and every run of other adapters, are polled one by one."""
    batches: dict[int, list[Target]] = {}
    now = timezone.now()
    for target in targets:
        if batched(target, now) and not target.alone:
            batches.setdefault(target.run.project_id, []).append(target)
    found: dict[int, PollResult] = {}
    for members in batches.values():
        if len(members) > 1:
            for result in poll_batch(members):
                found[id(result.target)] = result
    return [found.get(id(target)) or poll_one(target) for target in targets]


def poll_batch(targets: Sequence[Target]) -> list[PollResult]:
    """Status of runs sharing one adapter in few requests (``poll_many``).
    Never raises: a failed listing is every run's error; a run the answer
    leaves out is ``unlisted``."""
    adapter = targets[0].adapter
    assert adapter is not None
    with counting() as tally:
        try:
            states = adapter.poll_many([target.ref for target in targets])
        except Exception as exc:  # ConnectorError, or an adapter bug: both stay on these runs
            if not isinstance(exc, ConnectorError | ConfigurationError):
                logger.exception("batch poll of %s runs raised", len(targets))
            states = {target.run.pk: exc for target in targets}
    cost = tally.counted / len(targets)
    results = []
    for target in targets:
        answer = states.get(target.run.pk)
        result = PollResult(target, cost=cost)
        if isinstance(answer, RunState):
            result.state = answer
            result.logs_due = _fetches_logs(adapter.capabilities(), target) and logs_wanted(
                target, answer
            )
        elif answer is None:
            result.unlisted = True
        else:
            result.error = answer
        results.append(result)
    return results


def fetch_logs_only(target: Target) -> PollResult:
    """The logs of a run whose status a batch poll already stored. Never raises."""
    adapter = target.adapter
    assert adapter is not None
    result = PollResult(target)
    cursor = dict(target.run.log_cursor or {})
    try:
        batch = adapter.fetch_logs(target.ref, cursor)
    except Exception as exc:
        if not isinstance(exc, ConnectorError | ConfigurationError):
            logger.exception("fetch_logs of run %s raised", target.run.pk)
        result.log_error = exc
        return result
    result.entries.extend(batch.entries)
    result.log_cursor = dict(batch.cursor)
    result.logs_fetched_at = timezone.now()
    return result


def poll_one(target: Target) -> PollResult:
    """Ask the provider for one run's status, and its logs when due (see
    ``logs_wanted``). A cancel the provider has not accepted yet is sent
    first. Never raises."""
    with counting() as tally:
        result = _poll_one(target)
    result.cost = float(tally.counted)
    return result


def _poll_one(target: Target) -> PollResult:
    result = PollResult(target)
    adapter = target.adapter
    assert adapter is not None
    ref = target.ref
    caps = adapter.capabilities()
    if target.send_cancel:
        _send_cancel(target, result)
    cursor = dict(target.run.log_cursor or {})
    try:
        if caps.logs_with_status:
            state = adapter.poll_status_with_logs(ref, cursor)
        else:
            state = adapter.poll_status(ref)
    except Exception as exc:  # ConnectorError, or an adapter bug: both stay on this run
        if not isinstance(exc, ConnectorError | ConfigurationError):
            logger.exception("poll of run %s raised", target.run.pk)
        result.error = exc
        return result
    result.state = state
    if state.logs is not None:
        # The status read brought the output: that was this poll's log fetch.
        # Nothing new means nothing to store (and no second request).
        result.entries.extend(state.logs.entries)
        if state.logs.entries or dict(state.logs.cursor) != cursor:
            result.log_cursor = dict(state.logs.cursor)
            result.logs_fetched_at = timezone.now()
        result.state = replace(state, logs=None)
    elif _fetches_logs(caps, target) and logs_wanted(target, state):
        if target.alone:
            # Status first, as in the batch it was left out of: the lines follow.
            result.logs_due = True
            return result
        try:
            batch = adapter.fetch_logs(ref, cursor)
        except Exception as exc:  # the status update must not depend on the logs
            if not isinstance(exc, ConnectorError):
                logger.exception("fetch_logs of run %s raised", target.run.pk)
            result.log_error = exc
        else:
            result.entries.extend(batch.entries)
            result.log_cursor = dict(batch.cursor)
            result.logs_fetched_at = timezone.now()
    return result


def _fetches_logs(caps: Capabilities, target: Target) -> bool:
    return target.fetch_logs and caps.supports_logs


def logs_wanted(target: Target, state: RunState) -> bool:
    """At the end (final fetch), on every status change (unless the request
    budget is what limits: ``logs_on_change``), else every ``log_interval_s``;
    never while the run is still queued (it has no output yet, and a read
    would cost requests for nothing)."""
    run = target.run
    if state.status == "queued":
        return False
    if state.status in TERMINAL:
        return True
    if target.logs_on_change and state.status in TRANSITIONS.get(run.status, frozenset()):
        return True
    last = run.logs_fetched_at or run.last_reconciled_at or run.created_at
    if last is None:
        return True
    return (timezone.now() - last).total_seconds() >= target.log_interval_s


def _send_cancel(target: Target, result: PollResult) -> None:
    adapter = target.adapter
    assert adapter is not None
    try:
        result.cancel = adapter.cancel(target.ref)
    except Exception as exc:
        if not isinstance(exc, ConnectorError | ConfigurationError):
            logger.exception("cancel of run %s raised", target.run.pk)
        result.cancel_error = exc


def error_message(error: BaseException) -> str:
    """A poll error as text for the run (not yet redacted)."""
    if isinstance(error, ConnectorError | ConfigurationError):
        return error.message
    return f"internal error while polling ({type(error).__name__}): {error}"[:500]


def run_dispatch_retry(item: DispatchRetry) -> DispatchDone:
    """Send a queued run again through the dispatch pipeline, then give its
    lease back. Never raises."""
    try:
        # Should dispatch die halfway, the run comes back later, not next sweep.
        Run.objects.filter(pk=item.run_id, lease_owner=item.worker_id).update(
            next_reconcile_at=timezone.now() + timedelta(seconds=dispatch.DISPATCH_RETRY_S)
        )
        outcome = dispatch.dispatch_run(item.run_id)
    except Exception:
        logger.exception("dispatch retry of run %s failed", item.run_id)
        outcome = "error"
    finally:
        release(item.worker_id, [item.run_id])
        if item.own_thread:
            connections.close_all()  # this pool thread's own connections
    return DispatchDone(item, outcome)
