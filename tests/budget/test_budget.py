"""Token budgets: pacing arithmetic, which observation wins, and the shared
stores every reconciler process reads (database; Redis when reachable)."""

from __future__ import annotations

import math
import uuid

import pytest

from connectors import budget
from connectors.budget import Budget, BudgetBook, paced_interval
from connectors.budget_stores import DatabaseBudgetStore, RedisBudgetStore

NOW = 1_000_000.0


def make(remaining: int, reset_in: float = 3600.0, *, limit: int = 5000, key: str = "k") -> Budget:
    return Budget("github_actions", key, limit, remaining, NOW + reset_in, NOW)


def test_pacing_spends_what_is_left_evenly_until_the_reset():
    # 1,000 runs listed 100 a page: 10 requests a round; 4,900 spendable over an hour.
    interval = paced_interval(5.0, budget=make(5000), requests_per_round=10, now=NOW)

    assert interval == pytest.approx(10 / (4900 / 3600))


def test_cadence_stretches_as_the_budget_shrinks():
    plenty = paced_interval(5.0, budget=make(4000), requests_per_round=500, now=NOW)
    scarce = paced_interval(5.0, budget=make(1000), requests_per_round=500, now=NOW)

    assert 5.0 < plenty < scarce


def test_pacing_never_polls_faster_than_the_base_interval_or_unknown_budgets_slower():
    assert paced_interval(5.0, budget=make(5000), requests_per_round=1, now=NOW) == 5.0
    assert paced_interval(5.0, budget=None, requests_per_round=1000, now=NOW) == 5.0


def test_with_only_the_reserve_left_polls_wait_for_the_reset():
    low = make(budget.RESERVE_MIN, reset_in=900)

    assert low.polls_blocked(NOW)
    assert paced_interval(5.0, budget=low, requests_per_round=1, now=NOW) == 900


def test_a_reset_window_no_longer_limits():
    old = make(0, reset_in=-1)

    assert not old.polls_blocked(NOW)
    assert old.spendable_rate(NOW) == math.inf


def test_within_a_window_the_lowest_remaining_wins_and_a_later_reset_starts_anew():
    book = BudgetBook(clock=lambda: NOW)
    book.merge([make(4000)])
    book.merge([make(4500)])  # an older answer arriving late
    assert book.get("github_actions", "k").remaining == 4000

    book.merge([make(5000, reset_in=7200)])
    assert book.get("github_actions", "k").remaining == 5000


def test_token_keys_are_stable_hashes():
    assert budget.token_key("ghp_secret") == budget.token_key("ghp_secret")
    assert "ghp_secret" not in budget.token_key("ghp_secret")
    assert budget.token_key("a") != budget.token_key("b")


@pytest.mark.django_db
def test_the_database_store_keeps_the_newest_observation_for_every_process():
    store = DatabaseBudgetStore()
    store.publish([make(4000)])
    store.publish([make(4200)])  # another process, an older answer
    store.publish([make(3900, key="other")])

    loaded = {b.key: b for b in store.load()}

    assert loaded["k"].remaining == 4000 and loaded["other"].remaining == 3900
    assert loaded["k"].reset_at == pytest.approx(NOW + 3600)


@pytest.mark.django_db
def test_sync_publishes_what_this_process_saw_and_takes_what_others_saw(monkeypatch):
    store = DatabaseBudgetStore()
    store.publish([make(3000, key="theirs")])
    monkeypatch.setattr(budget, "book", BudgetBook(clock=lambda: NOW))
    budget.book.merge([make(4000, key="mine")], dirty=True)

    known = {b.key: b.remaining for b in budget.sync(store)}

    assert known == {"mine": 4000, "theirs": 3000}
    assert {b.key for b in store.load()} == {"mine", "theirs"}


@pytest.fixture
def redis_store():
    store = RedisBudgetStore("redis://127.0.0.1:6379/0", prefix=f"test:{uuid.uuid4().hex}:")
    try:
        store.client.ping()
    except Exception:
        pytest.skip("no Redis on 127.0.0.1:6379")
    yield store
    for name in store.client.scan_iter(match=f"{store.prefix}*"):
        store.client.delete(name)


def test_the_redis_store_keeps_the_newest_observation(redis_store):
    redis_store.publish([make(4000)])
    redis_store.publish([make(4200)])
    redis_store.publish([make(5000, reset_in=7200, key="next")])

    loaded = {b.key: b for b in redis_store.load()}

    assert loaded["k"].remaining == 4000
    assert loaded["next"].remaining == 5000
