"""Request budgets: what a provider token may still spend before its quota resets.

GitHub tells every answer's budget in ``x-ratelimit-limit``,
``x-ratelimit-remaining`` and ``x-ratelimit-reset`` (epoch seconds)
(https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api).
The HTTP seam reports those headers here (``book.observe``), keyed by the
provider and a hash of the credential (``token_key``): never the credential
itself. Three uses:

* the seam keeps polls out of the last ``reserve`` requests of a window
  (``Budget.polls_blocked``): they stay for cancels and dispatches, and the
  token never reaches 0 before its reset;
* the reconciler stretches a run's poll cadence as the budget shrinks
  (``paced_interval``): it spends the remaining budget evenly until the reset;
* ``/metrics`` shows each token's remaining budget and time to reset.

Every reconciler process must see the same budget, so the book is published
to and merged from a shared store (``sync``): the database
(``ProviderBudget``), or Redis when ``REDIS_URL`` is configured. Within one
window the lowest ``remaining`` seen by anyone is the truth (it only ever
falls); a later reset time starts a new window.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

# Requests of each window kept back from polling: cancels and dispatches may
# still use them, and concurrent in-flight polls (of every process) land in
# them instead of at 0.
RESERVE_MIN = 50
RESERVE_SHARE = 0.02
# Two observations whose reset times differ by less than this are one window
# (GitHub's reset is whole seconds; clocks and rounding differ a little).
SAME_WINDOW_S = 5.0
# Spend-rate measurement: observations kept per token (one a second at most),
# over how long, and the shortest span that gives a rate.
HISTORY = 256
SPEND_HORIZON_S = 180.0
SPEND_MIN_SPAN_S = 30.0


def token_key(credential: str) -> str:
    """A stable, non-reversible name for a credential (budgets are per token)."""
    return hashlib.sha256(b"ccdash-budget\x00" + credential.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Budget:
    """One token's budget as last seen: ``remaining`` of ``limit`` until ``reset_at``."""

    provider_id: str
    key: str
    limit: int
    remaining: int
    reset_at: float  # epoch seconds
    observed_at: float  # epoch seconds

    @property
    def reserve(self) -> int:
        return max(RESERVE_MIN, math.ceil(self.limit * RESERVE_SHARE))

    def reset_in(self, now: float) -> float:
        return max(0.0, self.reset_at - now)

    def current(self, now: float) -> bool:
        """False once the window has reset (the figures no longer hold)."""
        return now < self.reset_at

    def polls_blocked(self, now: float) -> bool:
        """Polls must wait for the reset: only the reserve is left."""
        return self.current(now) and self.remaining <= self.reserve

    def spendable_rate(self, now: float) -> float:
        """Requests per second that spend what is left (less the reserve)
        evenly until the reset; ``inf`` once the window has reset."""
        if not self.current(now):
            return math.inf
        return max(0, self.remaining - self.reserve) / max(1.0, self.reset_at - now)

    def newer_than(self, other: Budget) -> bool:
        """Whether this observation should replace ``other``."""
        if abs(self.reset_at - other.reset_at) < SAME_WINDOW_S:
            return self.remaining < other.remaining
        return self.reset_at > other.reset_at


def parse_headers(
    provider_id: str, key: str, headers: Mapping[str, str], now: float
) -> Budget | None:
    """A ``Budget`` from ``x-ratelimit-*`` headers; None when they are absent."""
    try:
        limit = int(headers["x-ratelimit-limit"])
        remaining = int(headers["x-ratelimit-remaining"])
        reset_at = float(headers["x-ratelimit-reset"])
    except (KeyError, TypeError, ValueError):
        return None
    return Budget(provider_id, key, limit, remaining, reset_at, now)


def paced_interval(
    base_s: float, *, budget: Budget | None, requests_per_round: float, now: float
) -> float:
    """Seconds between two polls of a run so that polling every active run of
    the token (``requests_per_round`` requests for one round over all of them)
    spends the budget evenly until its reset: never less than ``base_s``, and
    until the reset when only the reserve is left."""
    if budget is None or not budget.current(now):
        return base_s
    if budget.polls_blocked(now):
        return max(base_s, budget.reset_in(now))
    rate = budget.spendable_rate(now)
    return max(base_s, requests_per_round / rate) if rate > 0 else budget.reset_in(now)


class BudgetBook:
    """This process's view of every token's budget (thread-safe)."""

    def __init__(self, clock: Any = None) -> None:
        self._lock = threading.Lock()
        self._budgets: dict[tuple[str, str], Budget] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._history: dict[tuple[str, str], deque[Budget]] = {}
        self._clock = clock

    def now(self) -> float:
        return self._clock() if self._clock else time.time()

    def observe(self, provider_id: str, key: str, headers: Mapping[str, str]) -> None:
        """Take the budget an answer's headers tell (no-op without them)."""
        budget = parse_headers(provider_id, key, headers, self.now())
        if budget is not None:
            self.merge([budget], dirty=True)
            with self._lock:
                history = self._history.setdefault((provider_id, key), deque(maxlen=HISTORY))
                if not history or budget.observed_at - history[-1].observed_at >= 1.0:
                    history.append(budget)

    def spend_rate(self, provider_id: str, key: str, now: float) -> float | None:
        """Requests per second the token spent lately (see ``spending``)."""
        spending = self.spending(provider_id, key, now)
        return None if spending is None else spending[0] / (spending[2] - spending[1])

    def spending(self, provider_id: str, key: str, now: float) -> tuple[float, float, float] | None:
        """``(requests, since, until)``: what the token spent between two of
        this process's observations of the current window over the last
        ``SPEND_HORIZON_S`` (by every process: the provider's ``remaining``
        counts them all); None without enough of them."""
        with self._lock:
            history = list(self._history.get((provider_id, key), ()))
        if not history:
            return None
        last = history[-1]
        recent = [
            b
            for b in history
            if abs(b.reset_at - last.reset_at) < SAME_WINDOW_S
            and b.observed_at >= now - SPEND_HORIZON_S
        ]
        if len(recent) < 2 or last.observed_at - recent[0].observed_at < SPEND_MIN_SPAN_S:
            return None
        spent = max(0, recent[0].remaining - last.remaining)
        return float(spent), recent[0].observed_at, last.observed_at

    def merge(self, budgets: Iterable[Budget], *, dirty: bool = False) -> None:
        with self._lock:
            for budget in budgets:
                slot = (budget.provider_id, budget.key)
                known = self._budgets.get(slot)
                if known is None or budget.newer_than(known):
                    self._budgets[slot] = budget
                    if dirty:
                        self._dirty.add(slot)
                elif dirty and abs(budget.reset_at - known.reset_at) < SAME_WINDOW_S:
                    # Same figures seen again: still news for the shared store's age.
                    self._budgets[slot] = replace(known, observed_at=budget.observed_at)

    def get(self, provider_id: str, key: str) -> Budget | None:
        with self._lock:
            return self._budgets.get((provider_id, key))

    def all(self) -> list[Budget]:
        with self._lock:
            return list(self._budgets.values())

    def take_dirty(self) -> list[Budget]:
        with self._lock:
            dirty = [self._budgets[slot] for slot in self._dirty]
            self._dirty.clear()
            return dirty

    def clear(self) -> None:
        with self._lock:
            self._budgets.clear()
            self._dirty.clear()
            self._history.clear()


book = BudgetBook()


class BudgetStore(Protocol):
    def publish(self, budgets: list[Budget]) -> None: ...

    def load(self) -> list[Budget]: ...


def shared_store() -> BudgetStore:
    """Redis when ``REDIS_URL`` is configured, else the database."""
    from django.conf import settings

    if getattr(settings, "REDIS_URL", ""):
        from connectors.budget_stores import RedisBudgetStore

        return RedisBudgetStore(settings.REDIS_URL, prefix=settings.BUDGET_REDIS_PREFIX)
    from connectors.budget_stores import DatabaseBudgetStore

    return DatabaseBudgetStore()


def sync(store: BudgetStore | None = None) -> list[Budget]:
    """Publish what this process learnt, take what the others did; returns
    every budget now known. Called by the reconciler's sweep thread (never
    from the HTTP path)."""
    store = store or shared_store()
    dirty = book.take_dirty()
    if dirty:
        store.publish(dirty)
    book.merge(store.load())
    return book.all()
