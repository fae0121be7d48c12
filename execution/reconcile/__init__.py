"""Reconciliation: keep every active external run in step with its provider.

A sweep does, in order:

1. fail local runs whose worker stopped beating (``heartbeat``);
2. claim a batch of due external runs with a lease (``claims``);
3. poll them from the reconciler's thread pool (``pool``): one lane per
   provider, at most ``RECONCILE_CONCURRENCY`` threads working and
   ``PROVIDER_CONCURRENCY`` per provider, so a hanging provider only ever
   occupies its own share; each call through a circuit breaker (``breaker``,
   over the circuit dispatch shares) and the poll step (``poll``);
4. store the answers on the sweep's own thread as they come in (``apply``):
   unchanged runs in a few batched compare-and-swap UPDATEs, runs whose status
   changed one by one through ``transition()``; each write clears the lease.
   No transaction is open while an HTTP call is in flight, and the pool
   threads never touch the database (except dispatch retries, which reuse the
   dispatch pipeline).
5. schedule each answered run's next poll (``cadence``): runs polled one by
   one after an interval paced by the token's request budget; batch-polled
   runs at their slot's next listing (``schedule``), whose interval spends
   what the budget leaves for status. A batch-polled run due before that
   listing waits for it (step 3 skips it).

``sweep`` drives the steps; ``reconciler`` holds the owner (``Reconciler``)
and the entry points; ``types`` the plain data every module shares (it
imports none of them). A provider that cannot be reached never ends a run:
the run keeps its status, is polled with exponential backoff and turns
``stale``; unusable answers turn it ``error``.

Callers import the entry points from ``execution.reconciler`` (the stable
path the django-q2 schedule names). This file imports nothing, so importing
one module of the package (``claims``, say, for metrics) does not load the
engine.
"""
