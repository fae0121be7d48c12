"""``/metrics`` shows each provider token's shared budget, by a hash prefix."""

from __future__ import annotations

import time
import uuid

import pytest

from connectors import budget
from connectors.budget import Budget
from tests.reconcile.test_metrics import scrape

pytestmark = pytest.mark.django_db


def test_metrics_show_the_budget_remaining_and_the_seconds_to_reset_per_provider():
    key = budget.token_key(f"token-{uuid.uuid4().hex}")
    now = time.time()
    budget.shared_store().publish([Budget("github_actions", key, 5000, 1234, now + 600, now)])

    samples = scrape()

    labels = (("provider", "github_actions"), ("token", key[:12]))
    assert samples[("ccdash_provider_budget_remaining", labels)] == 1234
    assert 590 <= samples[("ccdash_provider_budget_reset_seconds", labels)] <= 600


def test_a_budget_whose_window_has_reset_shows_full(settings):
    key = budget.token_key(f"token-{uuid.uuid4().hex}")
    now = time.time()
    budget.shared_store().publish([Budget("github_actions", key, 5000, 3, now - 1, now - 3600)])

    samples = scrape()

    labels = (("provider", "github_actions"), ("token", key[:12]))
    assert samples[("ccdash_provider_budget_remaining", labels)] == 5000
    assert samples[("ccdash_provider_budget_reset_seconds", labels)] == 0
