"""Reconciliation metrics: counters shared through the database, and ``/metrics``.

Reconcilers run in other processes (and machines) than the web server, so
nothing is kept in process memory: each sweep adds its totals to
``ReconcileCounter`` rows (``record_sweep``, one ``F()`` update per key, one
transaction), and the view renders those rows plus gauges computed from the
run table at scrape time (a few aggregate queries on indexed columns) with a
custom collector in a fresh ``CollectorRegistry``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Min, Q
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder

from connectors import budget
from execution.models import ReconcileCounter, Run
from execution.reconcile.claims import active_external, due
from execution.states import ACTIVE_STATUSES

# (metric, provider id, kind) → amount; "" where a label does not apply.
CounterKey = tuple[str, str, str]

POLLS = "polls"  # kind: outcome (in_sync, unknown_status, transient, error, skipped)
ERRORS = "errors"  # kind: error kind (timeout, rate_limited, auth, not_found, …)
TRANSITIONS = "transitions"  # kind: the status a poll moved a run to
DISPATCH_RETRIES = "dispatch_retries"
WORKER_LOST = "worker_lost"
CLAIMED = "claimed"
SWEEPS = "sweeps"
DURATION_BUCKET = "sweep_duration_bucket"  # kind: upper bound; per bucket, not cumulative
DURATION_SUM = "sweep_duration_sum"
LAST_DURATION = "last_sweep_duration"  # gauges: overwritten, not added
LAST_END = "last_sweep_end"

DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, math.inf)


def _bucket_label(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


def duration_bucket(seconds: float) -> str:
    return _bucket_label(next(b for b in DURATION_BUCKETS if seconds <= b))


def record_sweep(
    counts: Mapping[CounterKey, float],
    *,
    duration_s: float,
    ended_at: datetime,
    sweep: bool = True,
) -> None:
    """Add one sweep's counters and its duration to the shared totals.

    ``sweep=False`` (a manual refresh of one run) adds the counters only.
    """
    totals: Counter[CounterKey] = Counter({k: v for k, v in counts.items() if v})
    if sweep:
        totals[(SWEEPS, "", "")] += 1
        totals[(DURATION_BUCKET, "", duration_bucket(duration_s))] += 1
        totals[(DURATION_SUM, "", "")] += duration_s
    if not totals:
        return
    with transaction.atomic():
        for key, amount in sorted(totals.items()):  # sorted: one lock order for everyone
            _add(key, amount)
        if sweep:
            _set((LAST_DURATION, "", ""), duration_s)
            _set((LAST_END, "", ""), ended_at.timestamp())


def _add(key: CounterKey, amount: float) -> None:
    metric, provider_id, kind = key
    rows = ReconcileCounter.objects.filter(metric=metric, provider_id=provider_id, kind=kind)
    if rows.update(value=F("value") + amount):
        return
    try:
        with transaction.atomic():  # savepoint: another process may create it first
            ReconcileCounter.objects.create(
                metric=metric, provider_id=provider_id, kind=kind, value=amount
            )
    except IntegrityError:
        rows.update(value=F("value") + amount)


def _set(key: CounterKey, value: float) -> None:
    metric, provider_id, kind = key
    rows = ReconcileCounter.objects.filter(metric=metric, provider_id=provider_id, kind=kind)
    if rows.update(value=value):
        return
    try:
        with transaction.atomic():
            ReconcileCounter.objects.create(
                metric=metric, provider_id=provider_id, kind=kind, value=value
            )
    except IntegrityError:
        rows.update(value=value)


class ReconcileCollector:
    """Reads the counters and the run table when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        counters: dict[str, list[ReconcileCounter]] = {}
        for row in ReconcileCounter.objects.all():
            counters.setdefault(row.metric, []).append(row)

        yield self._labelled(
            counters,
            POLLS,
            "ccdash_reconcile_polls",
            "Run polls by provider and outcome.",
            "outcome",
        )
        yield self._labelled(
            counters,
            ERRORS,
            "ccdash_reconcile_errors",
            "Reconcile errors by provider and kind.",
            "kind",
        )
        yield self._labelled(
            counters,
            TRANSITIONS,
            "ccdash_reconcile_transitions",
            "Status changes applied from provider answers.",
            "status",
        )
        yield self._labelled(
            counters,
            DISPATCH_RETRIES,
            "ccdash_reconcile_dispatch_retries",
            "Dispatches retried by the reconciler after a transient failure.",
            None,
        )
        yield self._total(
            counters,
            WORKER_LOST,
            "ccdash_reconcile_worker_lost",
            "Local runs failed because their worker stopped beating.",
        )
        yield self._total(counters, CLAIMED, "ccdash_reconcile_claimed", "Runs claimed by sweeps.")
        yield self._total(counters, SWEEPS, "ccdash_reconcile_sweeps", "Reconcile sweeps run.")
        yield self._histogram(counters)
        for metric, name, doc in (
            (
                LAST_DURATION,
                "ccdash_reconcile_last_sweep_duration_seconds",
                "Duration of the most recent sweep (any reconciler).",
            ),
            (
                LAST_END,
                "ccdash_reconcile_last_sweep_timestamp_seconds",
                "When the most recent sweep ended (Unix time).",
            ),
        ):
            gauge = GaugeMetricFamily(name, doc)
            rows = counters.get(metric, [])
            gauge.add_metric([], rows[0].value if rows else 0.0)
            yield gauge
        yield from self._run_gauges(now)
        yield from self._budget_gauges(now)

    @staticmethod
    def _labelled(counters, metric, name, doc, kind_label: str | None) -> CounterMetricFamily:
        labels = ["provider"] + ([kind_label] if kind_label else [])
        family = CounterMetricFamily(name, doc, labels=labels)
        for row in sorted(counters.get(metric, []), key=lambda r: (r.provider_id, r.kind)):
            family.add_metric([row.provider_id] + ([row.kind] if kind_label else []), row.value)
        return family

    @staticmethod
    def _total(counters, metric, name, doc) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, value=sum(r.value for r in counters.get(metric, [])))

    @staticmethod
    def _histogram(counters) -> HistogramMetricFamily:
        per_bucket = {r.kind: r.value for r in counters.get(DURATION_BUCKET, [])}
        cumulative, buckets = 0.0, []
        for bound in DURATION_BUCKETS:
            cumulative += per_bucket.get(_bucket_label(bound), 0.0)
            buckets.append((_bucket_label(bound), cumulative))
        total = sum(r.value for r in counters.get(DURATION_SUM, []))
        return HistogramMetricFamily(
            "ccdash_reconcile_sweep_duration_seconds",
            "Duration of reconcile sweeps.",
            buckets=buckets,
            sum_value=total,
        )

    @staticmethod
    def _run_gauges(now: datetime) -> Iterator[Metric]:
        by_sync = GaugeMetricFamily(
            "ccdash_runs_active_by_sync_status",
            "Active runs by provider and syncStatus (not in_sync = degraded).",
            labels=["provider", "sync_status"],
        )
        by_status = GaugeMetricFamily(
            "ccdash_runs_active_by_status",
            "Active runs by provider and status.",
            labels=["provider", "status"],
        )
        sync_totals: Counter[tuple[str, str]] = Counter()
        status_totals: Counter[tuple[str, str]] = Counter()
        rows = (
            Run.objects.filter(status__in=ACTIVE_STATUSES)
            .values("provider_id", "status", "sync_status")
            .annotate(n=Count("pk"))
            .order_by()
        )
        for row in rows:
            sync_totals[(row["provider_id"], row["sync_status"])] += row["n"]
            status_totals[(row["provider_id"], row["status"])] += row["n"]
        for (provider, sync_status), n in sorted(sync_totals.items()):
            by_sync.add_metric([provider, sync_status], n)
        for (provider, status), n in sorted(status_totals.items()):
            by_status.add_metric([provider, status], n)
        yield by_sync
        yield by_status

        due_runs = Run.objects.filter(due(now)).aggregate(
            oldest=Min("next_reconcile_at"), n=Count("pk")
        )
        lag = GaugeMetricFamily(
            "ccdash_reconcile_lag_seconds",
            "Now minus the oldest due nextReconcileAt among active external runs (0: none due).",
        )
        oldest = due_runs["oldest"]
        lag.add_metric([], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        yield lag
        due_gauge = GaugeMetricFamily(
            "ccdash_reconcile_due_runs", "Active external runs due for a poll now."
        )
        due_gauge.add_metric([], due_runs["n"])
        yield due_gauge
        leases = GaugeMetricFamily(
            "ccdash_reconcile_leases_held", "Active runs currently leased by a reconciler."
        )
        leases.add_metric(
            [],
            Run.objects.filter(active_external() & Q(lease_expires_at__gt=now)).count(),
        )
        yield leases

    @staticmethod
    def _budget_gauges(now: datetime) -> Iterator[Metric]:
        """Each provider token's request budget, as the reconcilers last shared
        it (``token``: the first characters of the credential's hash)."""
        remaining = GaugeMetricFamily(
            "ccdash_provider_budget_remaining",
            "Requests a provider token may still make before its quota resets.",
            labels=["provider", "token"],
        )
        reset = GaugeMetricFamily(
            "ccdash_provider_budget_reset_seconds",
            "Seconds until a provider token's quota resets.",
            labels=["provider", "token"],
        )
        epoch = now.timestamp()
        for known in sorted(budget.shared_store().load(), key=lambda b: (b.provider_id, b.key)):
            labels = [known.provider_id, known.key[:12]]
            current = known.current(epoch)
            remaining.add_metric(labels, known.remaining if current else known.limit)
            reset.add_metric(labels, known.reset_in(epoch))
        yield remaining
        yield reset


def render_metrics(accept: str = "") -> tuple[bytes, str]:
    """The metrics text (format negotiated from ``accept``) and its content type."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReconcileCollector())
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


def metrics_view(request: HttpRequest) -> HttpResponse:
    """``GET /metrics``: Prometheus text. Unauthenticated, like most exporters:
    it carries counts and durations only, never run content or credentials."""
    body, content_type = render_metrics(request.META.get("HTTP_ACCEPT", ""))
    return HttpResponse(body, content_type=content_type)
