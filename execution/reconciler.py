"""Reconciliation (issue 5). Placeholder until the reconciler lands."""

from __future__ import annotations


def reconcile_run(run_id: int, *, actor: str = "system"):
    """Poll one run now (manual refresh); returns the updated Run."""
    raise NotImplementedError
