"""Backoff: exponential, capped, jittered, never sooner than the provider asked."""

from __future__ import annotations

import pytest

from execution.backoff import backoff_delay


@pytest.mark.parametrize(
    ("failures", "low", "high"), [(1, 2.5, 5), (2, 5, 10), (3, 10, 20), (4, 20, 40)]
)
def test_the_delay_doubles_with_each_failure_within_its_jitter_band(failures, low, high):
    assert backoff_delay(failures, base_s=5, cap_s=300, rand=lambda: 0.0) == low
    assert backoff_delay(failures, base_s=5, cap_s=300, rand=lambda: 1.0) == high


def test_the_delay_is_capped():
    assert backoff_delay(50, base_s=5, cap_s=300, rand=lambda: 1.0) == 300
    assert backoff_delay(50, base_s=5, cap_s=300, rand=lambda: 0.0) == 150


def test_a_longer_retry_after_wins_even_past_the_cap():
    assert backoff_delay(1, base_s=5, cap_s=300, retry_after_s=600, rand=lambda: 0.5) == 600


def test_a_shorter_retry_after_does_not_shorten_the_backoff():
    assert backoff_delay(3, base_s=5, cap_s=300, retry_after_s=1, rand=lambda: 0.0) == 10


def test_jitter_spreads_runs_that_failed_together():
    delays = {round(backoff_delay(3, base_s=5, cap_s=300), 3) for _ in range(50)}
    assert len(delays) > 10
