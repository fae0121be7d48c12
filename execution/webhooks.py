"""Applying verified provider webhook deliveries to runs (a django-q2 task).

``connectors.webhooks`` verifies and stores a delivery, then enqueues
``process_delivery``. For GitHub:

* ``workflow_run``: the run's native status and conclusion, mapped by the
  adapter's state table, is applied at once, as a poll's answer would be
  (``provider_status_raw``, ``in_sync``, the transition). Deliveries may come
  twice or out of order, so a delivery only ever moves a run forward
  (queued → running/waiting → an end); an older one is ignored. A run that
  ends gets its final logs read here, before the status change they explain
  (the reconciler no longer polls an ended run).
* ``workflow_job``: a job started or ended: the run's logs are due at its
  next poll.

Polling goes on meanwhile, relaxed (``execution.reconcile.cadence``: while
deliveries arrive, ``RECONCILE_WEBHOOK_RELAX`` times the poll interval):
deliveries can be lost, and a lost one is caught by the next poll. A delivery
leaves the run's next poll where it was (its slot's next listing).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from connectors.base import RunRef
from connectors.configs import build_adapter, project_redactor
from connectors.errors import ConfigurationError, ConnectorError
from connectors.models import WebhookDelivery
from execution.events import NewEvent, append_events
from execution.models import Run
from execution.states import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    TRANSITIONS,
    RunStatus,
    SyncStatus,
    outcome_of_cancel,
)
from execution.transitions import transition

logger = logging.getLogger("execution.webhooks")

# How far along the lifecycle a status is: a delivery never moves a run back.
_RANK = {
    RunStatus.QUEUED: 0,
    RunStatus.RUNNING: 1,
    RunStatus.WAITING: 1,
    RunStatus.CANCELING: 1,
    **{status: 2 for status in TERMINAL_STATUSES},
}


def process_delivery(delivery_pk: int) -> str:
    """The task: apply one stored delivery (once). Returns what it did."""
    delivery = WebhookDelivery.objects.select_related("config").filter(pk=delivery_pk).first()
    if delivery is None or delivery.processed_at is not None:
        return "gone or done"
    config = delivery.config
    payload: dict[str, Any] = delivery.payload if isinstance(delivery.payload, dict) else {}
    if delivery.event == "workflow_run":
        outcome = _workflow_run(config, payload.get("workflow_run") or {})
    elif delivery.event == "workflow_job":
        outcome = _workflow_job(config, payload.get("workflow_job") or {})
    else:
        outcome = "ignored"
    WebhookDelivery.objects.filter(pk=delivery.pk).update(processed_at=timezone.now())
    return outcome


def _runs(config, provider_run_id: Any) -> list[Run]:
    if provider_run_id in (None, ""):
        return []
    return list(
        Run.objects.filter(
            project_id=config.project_id,
            provider_id=config.provider_id,
            provider_run_id=str(provider_run_id),
            status__in=ACTIVE_STATUSES,
        )
    )


def _workflow_job(config, job: dict[str, Any]) -> str:
    runs = _runs(config, job.get("run_id"))
    now = timezone.now()
    for run in runs:
        # Logs due: last read "long ago", and the next poll comes now.
        Run.objects.filter(pk=run.pk, status=run.status).update(
            logs_fetched_at=now - timedelta(days=1), next_reconcile_at=now
        )
    return f"logs due for {len(runs)} run(s)"


def _workflow_run(config, data: dict[str, Any]) -> str:
    runs = _runs(config, data.get("id"))
    if not runs:
        return "no active run"
    try:
        adapter = build_adapter(config.provider_id, config)
    except ConfigurationError:
        return "provider not usable"
    status = str(data.get("status") or "")
    raw = f"{status}/{data.get('conclusion') or ''}" if status == "completed" else status
    target = adapter.map_status(raw)
    if target is None:
        return f"unknown status {raw!r}: left to polling"
    applied = 0
    for run in runs:
        applied += _apply(run, adapter, raw, target, str(data.get("html_url") or ""))
    return f"{raw} applied to {applied} run(s)"


def _apply(run: Run, adapter, raw: str, target: str, url: str) -> int:
    if run.status == RunStatus.CANCELING and target in TERMINAL_STATUSES:
        target = outcome_of_cancel(target)
    if _RANK.get(target, 0) < _RANK.get(run.status, 0):
        return 0  # an older delivery than what the run already shows
    now = timezone.now()
    redactor = project_redactor(run.project_id)
    fields: dict[str, Any] = {
        "provider_status_raw": raw[:200],
        "sync_status": SyncStatus.IN_SYNC,
        "last_sync_error": "",
        "sync_failing_since": None,
        "reconcile_attempts": 0,
        "last_reconciled_at": now,
        # next_reconcile_at stays: polling goes on (relaxed by the cadence while
        # deliveries arrive), on the slot the run shares with its batch.
    }
    if url and url != run.provider_url:
        fields["provider_url"] = url[:1000]
    if target == run.status or target not in TRANSITIONS.get(run.status, frozenset()):
        return Run.objects.filter(pk=run.pk, status=run.status).update(**fields)
    events: list[NewEvent] = []
    if target in TERMINAL_STATUSES:
        events, fields = _final_logs(run, adapter, redactor, fields)
    with transaction.atomic():
        if not Run.objects.filter(pk=run.pk, status=run.status).update(**fields):
            return 0
        if events:
            append_events(run.pk, events)
        message = redactor.scrub(f"{adapter.label} reports {raw!r} (webhook)")
        return int(transition(run, target, reason="provider_status", message=message))


def _final_logs(run: Run, adapter, redactor, fields: dict[str, Any]):
    """The run's last output, read before it is marked ended (the status
    change comes after the lines it explains); a failure only costs the lines."""
    if not adapter.capabilities().supports_logs:
        return [], fields
    ref = RunRef(
        run.pk,
        run.provider_run_id,
        run.dispatch_key,
        dict(run.provider_state),
        created_at=run.created_at.timestamp() if run.created_at else None,
        provider_status_raw=run.provider_status_raw,
    )
    try:
        batch = adapter.fetch_logs(ref, dict(run.log_cursor or {}))
    except (ConnectorError, ConfigurationError) as exc:
        logger.warning("run %s: final logs not read: %s", run.pk, redactor.scrub(exc.message))
        return [], fields
    events = [
        NewEvent(
            entry.stream,
            "output",
            text=redactor.scrub(entry.text),
            payload=redactor.scrub_obj(dict(entry.payload)),
        )
        for entry in batch.entries
    ]
    return events, {**fields, "log_cursor": dict(batch.cursor), "logs_fetched_at": timezone.now()}
