"""``/metrics``: Prometheus text that reflects every reconciler process (spec §6)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from connectors.errors import TransientError
from execution.reconciler import reconcile_sweep

pytestmark = pytest.mark.django_db


def scrape() -> dict[tuple[str, tuple], float]:
    response = Client().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_count_polls_and_errors_by_provider_and_change_after_a_sweep(fake, other, make_run):
    fake.add("p-1", "working")
    other.add("o-1", "working")
    make_run("p-1")
    make_run("o-1", provider_id="other")
    other.failure = lambda: TransientError("HTTP 503", status_code=503)
    before = scrape()
    assert (
        "ccdash_reconcile_polls_total",
        (("outcome", "in_sync"), ("provider", "fake")),
    ) not in before

    reconcile_sweep()

    after = scrape()
    assert (
        after[("ccdash_reconcile_polls_total", (("outcome", "in_sync"), ("provider", "fake")))] == 1
    )
    assert (
        after[("ccdash_reconcile_polls_total", (("outcome", "transient"), ("provider", "other")))]
        == 1
    )
    assert (
        after[("ccdash_reconcile_errors_total", (("kind", "transient"), ("provider", "other")))]
        == 1
    )
    assert (
        after[("ccdash_reconcile_sweeps_total", ())]
        == before.get(("ccdash_reconcile_sweeps_total", ()), 0) + 1
    )
    assert after[("ccdash_reconcile_sweep_duration_seconds_count", ())] >= 1
    assert after[("ccdash_reconcile_last_sweep_duration_seconds", ())] > 0


def test_metrics_show_active_runs_by_sync_status_and_status(fake, make_run):
    make_run("p-1", sync_status="stale", due_in=30)
    make_run("p-2", sync_status="in_sync", status="waiting", due_in=30)

    samples = scrape()

    by_sync = "ccdash_runs_active_by_sync_status"
    assert samples[(by_sync, (("provider", "fake"), ("sync_status", "stale")))] == 1
    assert samples[(by_sync, (("provider", "fake"), ("sync_status", "in_sync")))] == 1
    by_status = "ccdash_runs_active_by_status"
    assert samples[(by_status, (("provider", "fake"), ("status", "waiting")))] == 1


def test_lag_is_now_minus_the_oldest_due_run_and_drops_after_a_sweep(fake, make_run):
    fake.add("p-1", "working")
    make_run("p-1", due_in=-120)
    make_run("p-2", due_in=-5, status="succeeded")  # terminal: not counted

    lag = scrape()[("ccdash_reconcile_lag_seconds", ())]
    assert 119 <= lag < 130

    reconcile_sweep()
    assert scrape()[("ccdash_reconcile_lag_seconds", ())] == 0


def test_unknown_statuses_are_counted(fake, make_run):
    fake.add("p-1", "teleporting")
    make_run("p-1")

    reconcile_sweep()

    samples = scrape()
    key = ("ccdash_reconcile_errors_total", (("kind", "unknown_status"), ("provider", "fake")))
    assert samples[key] == 1


def test_leases_held_are_visible(make_run):
    make_run("p-1", lease_owner="w:1:a", lease_expires_at=timezone.now() + timedelta(seconds=30))

    assert scrape()[("ccdash_reconcile_leases_held", ())] == 1


def test_counters_persist_across_reconciler_instances(fake, make_run):
    fake.add("p-1", "working")
    run = make_run("p-1")
    reconcile_sweep()
    from tests.reconcile.conftest import make_due

    make_due(run)
    reconcile_sweep()  # another worker id, same totals

    samples = scrape()
    assert (
        samples[("ccdash_reconcile_polls_total", (("outcome", "in_sync"), ("provider", "fake")))]
        == 2
    )
