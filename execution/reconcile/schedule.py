"""The listing schedule of batch-polled runs (see ``cadence``): for each
(project, provider) slot, when its next listing is due, and what its rounds
cost in counted requests, so that the cadence can pace the listings by the
token's budget.

One ``ListingSchedule`` per process (``listings``), shared by its sweeps;
thread-safe. It imports nothing from the rest of the package.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from connectors import budget

# Listing rounds: the measured cost of a round is a moving average over the
# last few (weight of the newest); rounds are kept long enough to compare with
# the budget's spend horizon.
ROUND_WEIGHT = 0.3
LISTING_HORIZON_S = budget.SPEND_HORIZON_S
# A slot whose next listing has been overdue this long lists no more (its runs
# ended, or another process polls them): its rounds no longer count; after
# FORGET_SLOT_S it is dropped.
IDLE_SLOT_S = 60.0
FORGET_SLOT_S = 3600.0

Slot = tuple[int, str]  # (project id, provider id)
TokenSlot = tuple[str, str]  # (provider id, token key)


@dataclass
class _Listing:
    """One slot's listing schedule and what its rounds cost."""

    token: TokenSlot
    next_at: float = -math.inf  # epoch of the next listing
    started_at: float = -math.inf  # epoch the current round started
    current: float = 0.0  # counted requests of the current round so far
    per_round: float | None = None  # moving average of finished rounds
    rounds: deque[tuple[float, float]] = field(default_factory=deque)  # (started, cost)

    def finish_round(self) -> None:
        if self.started_at > -math.inf:
            cost = self.current
            self.per_round = (
                cost
                if self.per_round is None
                else (1 - ROUND_WEIGHT) * self.per_round + ROUND_WEIGHT * cost
            )
            self.rounds.append((self.started_at, cost))
        self.current = 0.0

    def idle(self, now: float, for_s: float) -> bool:
        """No round for ``for_s``: the next listing has been overdue that long
        (a round starting now is not idle)."""
        return self.next_at < now - for_s and self.started_at < now - for_s

    def spent_between(self, since: float, until: float) -> float:
        while self.rounds and self.rounds[0][0] < until - 2 * LISTING_HORIZON_S:
            self.rounds.popleft()
        spent = sum(cost for at, cost in self.rounds if since <= at <= until)
        return spent + (self.current if since <= self.started_at <= until else 0.0)


class ListingSchedule:
    """Every batch-polled slot's next listing, and the measured cost of its
    rounds (thread-safe; one per process)."""

    def __init__(self) -> None:
        # Re-entrant: a new round's interval reads the measured costs.
        self._lock = threading.RLock()
        self._slots: dict[Slot, _Listing] = {}

    def pending(self, slot: Slot, now: float, since: float) -> float | None:
        """The slot's next listing when it is still ahead and its current
        round started before ``since`` (a run due before it joins it; a run of
        a round under way is read in it), else None."""
        with self._lock:
            listing = self._slots.get(slot)
            if listing is None or listing.next_at <= now or listing.started_at >= since:
                return None
            return listing.next_at

    def next_at(
        self,
        slot: Slot,
        token: TokenSlot,
        now: float,
        cost: float | None,
        interval: Callable[[], float],
    ) -> float:
        """When a run of ``slot`` read at ``now`` (costing ``cost`` requests)
        is due again: the slot's next listing. The first run read once that
        time has come starts a new round, ``interval()`` seconds long."""
        with self._lock:
            listing = self._slots.get(slot)
            if listing is None or listing.token != token:
                listing = self._slots[slot] = _Listing(token)
            if listing.next_at <= now:
                listing.finish_round()
                listing.started_at = now
                listing.next_at = now + interval()  # the finished round counts
            listing.current += cost or 0.0
            return listing.next_at

    def round_cost(self, token: TokenSlot, now: float) -> float | None:
        """Counted requests of one round over all of the token's slots that
        still list (a slot whose listing has been overdue for ``IDLE_SLOT_S``
        has no runs left to poll here); None until each has finished a round."""
        with self._lock:
            for slot in [k for k, s in self._slots.items() if s.idle(now, FORGET_SLOT_S)]:
                del self._slots[slot]
            costs = [
                s.per_round
                for s in self._slots.values()
                if s.token == token and not s.idle(now, IDLE_SLOT_S)
            ]
        if not costs or any(cost is None for cost in costs):
            return None
        return float(sum(costs))  # type: ignore[arg-type]

    def listing_spend(self, token: TokenSlot, since: float, until: float) -> float:
        """Counted requests of this process's listing rounds of the token that
        started between ``since`` and ``until``."""
        with self._lock:
            return sum(
                s.spent_between(since, until) for s in self._slots.values() if s.token == token
            )

    def clear(self) -> None:
        with self._lock:
            self._slots.clear()


listings = ListingSchedule()
