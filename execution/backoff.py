"""When to poll a run again after a failed reconcile attempt.

Exponential in the number of consecutive failures, capped, jittered so that
the runs of a provider that went down together do not all come back in one
burst, and never sooner than the provider asked (``Retry-After``).

Jitter is "equal jitter" (half the delay fixed, half random): unlike full
jitter it keeps a floor that doubles with every failure, so the gap between
two polls of a failing run never shrinks before the cap is reached — which is
what an operator watching a degraded run (and acceptance test 2) expects.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from django.conf import settings


def backoff_delay(
    failures: int,
    *,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1-based).

    The ceiling is ``min(cap_s, base_s * 2 ** (failures - 1))``; the delay is
    drawn from ``[ceiling / 2, ceiling]``, then raised to ``retry_after_s`` when
    the provider gave a longer hint (which may exceed the cap: the provider
    knows best when it will answer again).
    """
    exponent = min(max(failures, 1) - 1, 32)  # 2**32 times base is past any cap
    ceiling = min(cap_s, base_s * (2**exponent))
    delay = ceiling / 2 + rand() * ceiling / 2
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def reconcile_backoff(failures: int, retry_after_s: float | None = None) -> float:
    """``backoff_delay`` with the ``EXECUTION`` settings (interval, max backoff)."""
    conf = settings.EXECUTION
    return backoff_delay(
        failures,
        base_s=float(conf["RECONCILE_INTERVAL_S"]),
        cap_s=float(conf["RECONCILE_MAX_BACKOFF_S"]),
        retry_after_s=retry_after_s,
    )
