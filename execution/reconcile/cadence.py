"""When a run that answered is polled next: the poll interval, stretched to
fit the provider token's request budget, relaxed while webhooks arrive.

Two kinds of runs:

* **Polled one by one** (Cursor, Devin's single reads, runs being canceled):
  the base interval, stretched so that one round over all of the token's
  active runs (``active runs * requests per run-poll``, measured) spends what
  is left of the budget evenly until the reset (``budget.paced_interval``),
  corrected every ``ADJUST_EVERY_S`` by what the token really spends. Runs
  just dispatched and runs being canceled keep the base interval.
* **Batch-polled** (an adapter declaring ``supports_batch_poll``: GitHub's
  listing): each (project, provider) slot has one *listing schedule*. Every
  run of the slot is due at the slot's next listing, whenever it was read
  last, so one listing answers for all of them (``ListingSchedule``). A run
  due before it (just dispatched, or back from an error's backoff) joins the
  next listing instead of being read alone (``Sweep`` defers it). The
  listing interval spends what the budget leaves for status::

      interval = P / (SAFETY * R - O)

  ``P``: counted requests of one listing round of the token's slots
  (measured: pages that were not a free 304, and the single reads of runs
  missing from the lists, i.e. those that ended); ``R``: the spendable rate,
  ``(remaining - reserve) / time to reset``; ``O``: what the token spends
  besides listings — final logs, cancels, dispatches, other processes' work —
  the spend rate every answer's headers show, less this process's own
  listings over the same time. Status reads are what freshness is made of,
  so they get the budget first: ``O`` is paid before them (but status keeps
  at least ``STATUS_FLOOR`` of the rate), and while the budget limits, output
  of running jobs is read only within a small allowance
  (``running_output_allowed``).
  Never below the base interval, never past the reset.
* **Webhooks**: while a project's provider delivers signed webhooks, its runs
  are polled ``RECONCILE_WEBHOOK_RELAX`` times less often — never not at all,
  since deliveries can be lost.

The schedule and the measured costs live in this process (module state,
shared by its sweeps); the budget itself is shared by every process
(``connectors.budget``), so several reconcilers pace themselves by what all of
them spend.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta

from django.conf import settings

from connectors import budget
from connectors.http import credential_key
from connectors.models import ProviderConfig
from execution.models import Run
from execution.reconcile.schedule import Slot, listings
from execution.reconcile.types import Target
from execution.states import ACTIVE_STATUSES, RunStatus

# A run younger than this is "fresh": polled at the base interval whatever the budget.
FRESH_S = 120.0
# Defaults for EXECUTION["RECONCILE_WEBHOOK_RELAX"] and how recent the last
# delivery must be for webhooks to count as arriving.
WEBHOOK_RELAX = 15.0
WEBHOOK_FRESH_S = 600.0
# The measured requests per run-poll (per provider token) is a ratio of decaying
# sums over roughly the last 1 / COST_DECAY polls: a run polled alone pays its own.
COST_DECAY = 0.002
# The share of a token's spendable budget status reads of runs polled one by
# one plan for (the rest: output of running jobs, cancels, dispatches).
STATUS_SHARE = 0.6
# Requests a log read of a running run costs when unmeasured (GitHub: the job
# list and the job log; the signed download is not an API request).
LOG_COST = 2.0
# While the budget limits, reads of running jobs' output (not the final read of
# an ended run, which always happens) share LOG_ALLOWANCE of the spendable rate
# through a token bucket holding at most LOG_BURST_S of it: a synchronized
# crowd of runs whose output fell due together cannot spend the budget at once.
LOG_ALLOWANCE = 0.1
LOG_BURST_S = 30.0
_log_buckets: dict[tuple[str, str], list[float]] = {}  # token -> [reads left, refilled at]
# Aim below the spendable rate: what other work spends comes in bursts.
SAFETY = 0.8
# Status reads keep at least this share of the spendable rate however much
# other work spends (it runs down to the reserve; polls then wait for the reset).
STATUS_FLOOR = 0.25

_costs: dict[tuple[str, str], tuple[float, float]] = {}
_costs_lock = threading.Lock()


def _smoothed_cost(provider_id: str, key: str, cost: float | None) -> float:
    """Requests per run-poll on this token lately (1.0 until measured)."""
    with _costs_lock:
        spent, polls = _costs.get((provider_id, key), (0.0, 0.0))
        if cost is not None:
            keep = 1.0 - COST_DECAY
            spent, polls = spent * keep + cost, polls * keep + 1.0
            _costs[(provider_id, key)] = (spent, polls)
        return spent / polls if polls else 1.0


# A correction of each token's estimated per-run interval by what the token
# really spends (status, logs, cancels, other processes): every ADJUST_EVERY_S
# it is scaled by spent / (SAFETY * spendable rate), by 0.7 to 1.5 at once.
ADJUST_EVERY_S = 15.0
_corrections: dict[tuple[str, str], list[float]] = {}  # slot -> [factor, adjusted at]


def _paced(
    provider_id: str, key: str, estimate: float, base: float, known: budget.Budget, now: float
) -> float:
    with _costs_lock:
        pace = _corrections.setdefault((provider_id, key), [1.0, now])
        if now - pace[1] >= ADJUST_EVERY_S:
            spent = budget.book.spend_rate(provider_id, key, now)
            allowed = known.spendable_rate(now)
            if spent is not None and 0 < allowed < math.inf:
                step = min(1.5, max(0.7, spent / (SAFETY * allowed)))
                pace[0] = min(max(1.0, pace[0] * step), 1000.0)
            pace[1] = now
        return min(max(base, estimate * pace[0]), max(base, known.reset_in(now)))


def forget() -> None:
    """Drop what this process measured and scheduled (tests: a fresh start)."""
    with _costs_lock:
        _costs.clear()
        _corrections.clear()
        _log_buckets.clear()
    listings.clear()


def listing_interval(
    base: float, *, known: budget.Budget | None, per_round: float | None, other: float, now: float
) -> float:
    """Seconds between two listing rounds that spend what the budget leaves
    after ``other`` requests per second (see the module doc): ``base`` until
    the budget and a round's cost are known; until the reset when nothing is
    left for status."""
    if known is None or not known.current(now) or per_round is None:
        return base
    until_reset = max(base, known.reset_in(now))
    if known.polls_blocked(now):
        return until_reset
    spendable = SAFETY * known.spendable_rate(now)
    available = max(spendable - other, STATUS_FLOOR * spendable)
    if available <= 0:
        return until_reset
    return min(max(base, per_round / available), until_reset)


class Cadence:
    """Next-poll intervals for one sweep's results."""

    def __init__(self, base_s: float) -> None:
        conf = settings.EXECUTION
        self.base_s = base_s
        self.relax = max(1.0, float(conf.get("RECONCILE_WEBHOOK_RELAX", WEBHOOK_RELAX)))
        self._active: dict[Slot, int] = {}
        self._webhooks: dict[Slot, bool] = {}
        self._keys: dict[int, str] = {}

    def next_poll_at(self, target: Target, cost: float | None, now: datetime) -> datetime:
        """When to poll the run again: a batch-polled run at its slot's next
        listing, any other after ``interval_s``."""
        if not batched(target, now):
            return now + timedelta(seconds=self.interval_s(target, cost, now))
        run = target.run
        slot = (run.project_id, run.provider_id)
        token = (run.provider_id, self._token_key(target))
        at = listings.next_at(
            slot,
            token,
            now.timestamp(),
            cost,
            lambda: self.listing_interval_s(target, now),
        )
        return datetime.fromtimestamp(at, UTC)

    def joins_listing(self, target: Target, now: datetime, since: datetime) -> datetime | None:
        """The slot's next listing when ``target`` should wait for it instead
        of being read alone now: it is batch-polled, the listing is ahead, and
        no round of it started since ``since`` (the sweep's start)."""
        if not batched(target, now):
            return None
        slot = (target.run.project_id, target.run.provider_id)
        at = listings.pending(slot, now.timestamp(), since.timestamp())
        return None if at is None else datetime.fromtimestamp(at, UTC)

    def listing_interval_s(self, target: Target, now: datetime) -> float:
        """Seconds to the slot's next listing (see ``listing_interval``): the
        base interval until a round of every slot of the token has been
        measured. (A run's share of its group's requests says little about a
        round: the groups of a round share one listing, the first pays.)"""
        run = target.run
        relax = self.relax if self._webhooks_arrive(run, now) else 1.0
        key = self._token_key(target)
        if not key:
            return self.base_s * relax
        epoch = now.timestamp()
        token = (run.provider_id, key)
        other = 0.0
        spending = budget.book.spending(run.provider_id, key, epoch)
        if spending is not None:
            spent, since, until = spending
            listed = listings.listing_spend(token, since, until)
            other = max(0.0, spent - listed) / (until - since)
        per_round = listings.round_cost(token, epoch)
        interval = listing_interval(
            self.base_s,
            known=budget.book.get(run.provider_id, key),
            per_round=per_round,
            other=other,
            now=epoch,
        )
        return interval * relax

    def interval_s(self, target: Target, cost: float | None, now: datetime) -> float:
        """A run polled one by one (see the module doc)."""
        run = target.run
        if run.status == RunStatus.CANCELING or _fresh(run, now):
            return self.base_s
        base = self.base_s * (self.relax if self._webhooks_arrive(run, now) else 1.0)
        key = self._token_key(target)
        if not key:
            return base
        per_run = _smoothed_cost(run.provider_id, key, cost)
        known = budget.book.get(run.provider_id, key)
        demand = self._active_runs(run) * per_run / STATUS_SHARE
        epoch = time.time()
        estimate = budget.paced_interval(base, budget=known, requests_per_round=demand, now=epoch)
        if known is None or not known.current(epoch):
            return estimate
        if known.polls_blocked(epoch):
            return estimate  # until the reset
        return _paced(run.provider_id, key, estimate, base, known, epoch)

    def log_interval_s(self, target: Target, base_s: float) -> float:
        """How often a running run's output is read when its status did not
        change: ``base_s``, stretched so that reading every active run's output
        takes at most the log allowance (``LOG_ALLOWANCE``) of the token's
        spendable rate."""
        key = self._token_key(target)
        known = budget.book.get(target.run.provider_id, key) if key else None
        if known is None:
            return base_s
        demand = self._active_runs(target.run) * LOG_COST / (LOG_ALLOWANCE * SAFETY)
        return budget.paced_interval(
            base_s, budget=known, requests_per_round=demand, now=time.time()
        )

    def running_output_allowed(self, target: Target) -> bool:
        """Whether a read of a running run's output fits the token's log
        allowance now (takes one read from it; see ``LOG_ALLOWANCE``)."""
        key = self._token_key(target)
        known = budget.book.get(target.run.provider_id, key) if key else None
        now = time.time()
        if known is None or not known.current(now):
            return True
        rate = LOG_ALLOWANCE * SAFETY * known.spendable_rate(now) / LOG_COST
        with _costs_lock:
            bucket = _log_buckets.setdefault((target.run.provider_id, key), [1.0, now])
            bucket[0] = min(max(1.0, rate * LOG_BURST_S), bucket[0] + rate * (now - bucket[1]))
            bucket[1] = now
            if bucket[0] < 1.0:
                return False
            bucket[0] -= 1.0
            return True

    def _token_key(self, target: Target) -> str:
        adapter = target.adapter
        if adapter is None:
            return ""
        if id(adapter) not in self._keys:
            headers = getattr(adapter, "auth_headers", None)
            try:
                self._keys[id(adapter)] = credential_key(headers() if headers else {}, None)
            except Exception:  # a missing credential: nothing to pace by
                self._keys[id(adapter)] = ""
        return self._keys[id(adapter)]

    def _active_runs(self, run: Run) -> int:
        slot = (run.project_id, run.provider_id)
        if slot not in self._active:
            self._active[slot] = Run.objects.filter(
                project_id=run.project_id, provider_id=run.provider_id, status__in=ACTIVE_STATUSES
            ).count()
        return max(1, self._active[slot])

    def _webhooks_arrive(self, run: Run, now: datetime) -> bool:
        slot = (run.project_id, run.provider_id)
        if slot not in self._webhooks:
            last = (
                ProviderConfig.objects.filter(
                    project_id=run.project_id, provider_id=run.provider_id
                )
                .values_list("last_webhook_at", flat=True)
                .first()
            )
            self._webhooks[slot] = bool(last and now - last <= timedelta(seconds=WEBHOOK_FRESH_S))
        return self._webhooks[slot]


def _fresh(run: Run, now: datetime) -> bool:
    return run.created_at is not None and (now - run.created_at).total_seconds() < FRESH_S


def batched(target: Target, now: datetime) -> bool:
    """Whether the run is polled in its adapter's batch: runs being canceled
    are read on their own (a conditional read of an unchanged run is free on
    GitHub), at the base interval. A run just dispatched joins the batch: its
    first change is found in a listing for free, where a read of its own
    would count."""
    del now
    adapter = target.adapter
    return (
        adapter is not None
        and adapter.capabilities().supports_batch_poll
        and not target.send_cancel
        and target.run.status != RunStatus.CANCELING
    )
