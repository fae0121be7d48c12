"""When a run that answered is polled next: the poll interval, stretched to
fit the provider token's request budget, relaxed while webhooks arrive.

* Budget: ``connectors.budget`` knows each token's remaining requests and
  reset (from the provider's rate-limit headers, shared by every process).
  A round over all of the token's active runs costs about ``active runs *
  requests per run`` (a batch listing shares its requests among its runs; a
  free 304 costs nothing); ``paced_interval`` spreads what is left evenly
  until the reset. Every process computes it from the same shared budget and
  applies it to the runs it polled, so together they stay within it.
* Runs just dispatched and runs being canceled keep the base interval: they
  are few, and what a user waits for first.
* Webhooks: while a project's provider delivers signed webhooks, its runs are
  polled ``RECONCILE_WEBHOOK_RELAX`` times less often — never not at all,
  since deliveries can be lost.

Lives on the sweep's thread (``ResultWriter``); cached per sweep.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timedelta

from django.conf import settings

from connectors import budget
from connectors.http import credential_key
from connectors.models import ProviderConfig
from execution.models import Run
from execution.reconcile.types import Target
from execution.states import ACTIVE_STATUSES, RunStatus

# A run younger than this is "fresh": polled at the base interval whatever the budget.
FRESH_S = 120.0
# Defaults for EXECUTION["RECONCILE_WEBHOOK_RELAX"] and how recent the last
# delivery must be for webhooks to count as arriving.
WEBHOOK_RELAX = 10.0
WEBHOOK_FRESH_S = 600.0
# The measured requests per run-poll (per provider token) is a ratio of decaying
# sums over roughly the last 1 / COST_DECAY polls: a batch's runs share its
# requests, a run polled alone pays its own.
COST_DECAY = 0.002
# How a token's spendable budget is shared: status reads first, then the
# output of running jobs (read on a status change and at the end regardless).
STATUS_SHARE = 0.6
LOG_SHARE = 0.4
# Requests a log read of a running run costs when unmeasured (GitHub: the job
# list and the job log; the signed download is not an API request).
LOG_COST = 2.0

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


# A correction of each token's estimated status interval by what the token
# really spends (status, logs, cancels, other processes): every ADJUST_EVERY_S
# it is scaled by spent / (SAFETY * spendable rate), by 0.7 to 1.5 at once.
ADJUST_EVERY_S = 15.0
# Aim below the spendable rate: what other work spends comes in bursts.
SAFETY = 0.8
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
    """Drop what this process measured (tests: a fresh start)."""
    with _costs_lock:
        _costs.clear()
        _corrections.clear()


class Cadence:
    """Next-poll intervals for one sweep's results."""

    def __init__(self, base_s: float) -> None:
        conf = settings.EXECUTION
        self.base_s = base_s
        self.relax = max(1.0, float(conf.get("RECONCILE_WEBHOOK_RELAX", WEBHOOK_RELAX)))
        self._active: dict[tuple[int, str], int] = {}
        self._webhooks: dict[tuple[int, str], bool] = {}
        self._keys: dict[int, str] = {}

    def next_poll_at(self, target: Target, cost: float | None, now: datetime) -> datetime:
        """When to poll the run again.

        Runs of a batch-polling adapter (not fresh, not canceling) fall due
        together on an epoch-aligned grid: the first boundary after now of a
        grid of ``base_s * 2**k``, the smallest not shorter than the paced
        interval. Runs polled at different moments meet at the next boundary
        and share one listing from then on (the grids nest, so they stay
        together when the budget stretches the grid); a listing per group of
        due runs would cost the whole listing each time."""
        interval = self.interval_s(target, cost, now)
        if not batched(target, now):
            return now + timedelta(seconds=interval)
        steps = max(0, math.ceil(math.log2(max(interval, self.base_s) / self.base_s) - 1e-9))
        grid = self.base_s * 2**steps
        epoch = now.timestamp()
        return now + timedelta(seconds=(math.floor(epoch / grid) + 1) * grid - epoch)

    def interval_s(self, target: Target, cost: float | None, now: datetime) -> float:
        run = target.run
        if run.status == RunStatus.CANCELING or (_fresh(run, now) and not batched(target, now)):
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
        takes at most ``LOG_SHARE`` of the token's budget."""
        key = self._token_key(target)
        known = budget.book.get(target.run.provider_id, key) if key else None
        if known is None:
            return base_s
        demand = self._active_runs(target.run) * LOG_COST / LOG_SHARE
        return budget.paced_interval(
            base_s, budget=known, requests_per_round=demand, now=time.time()
        )

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
