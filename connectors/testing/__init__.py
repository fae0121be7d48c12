"""Test support that ships with the product: the shared adapter conformance
suite (``conformance``) and an in-memory external provider (``fake_adapter``).

Kept out of ``tests/`` so that every adapter module's test, ours or a user's,
can import them.
"""
