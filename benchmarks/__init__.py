"""Benchmarks: one command each, results written down in ``benchmarks/README.md``.

``python -m benchmarks.reconcile_sweep`` (``make bench``): a reconcile sweep
over 5,000 simulated runs against plain HTTP polling of the same runs.
"""
