"""Test support shared by the test packages: the adapter conformance suite
(``conformance``) and an in-memory external provider (``fake_adapter``)."""
