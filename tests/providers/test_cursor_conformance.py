"""The shared adapter conformance suite, run live against the Cursor simulator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from unittest import mock

import pytest

from connectors.base import ProviderAdapter, RunRef, Secrets
from connectors.providers.cursor.adapter import CursorAdapter
from connectors.providers.cursor.simulator import CursorSimulator
from tests.support.conformance import AdapterConformance, Call


class TestCursorConformance(AdapterConformance):
    adapter_class = CursorAdapter
    live_http = True
    valid_settings = {"repository": "https://github.com/ccdash/demo"}
    known_native_statuses = ("CREATING", "RUNNING", "FINISHED", "ERROR", "CANCELLED", "EXPIRED")

    @pytest.fixture(autouse=True)
    def _simulator(self, cursor_sim):
        self.sim = cursor_sim

    def make_secrets(self) -> dict[str, str]:
        return {"apiKey": CursorSimulator.default_token}

    def make_adapter(self) -> ProviderAdapter:
        settings = CursorAdapter.validate_config({**self.valid_settings, "baseUrl": self.sim.url})
        return CursorAdapter(settings=settings, secrets=Secrets(self.make_secrets()))

    def run_ref(self, adapter: ProviderAdapter) -> RunRef:
        return RunRef(424242, "run-missing", "conformance", {"agentId": "bc-missing"})

    def provoke_errors(self, adapter: ProviderAdapter) -> list[Call]:
        """A real run, then each fault of the simulator in turn (the 429 last:
        it shuts the endpoint's gate)."""
        result = adapter.dispatch(self.dispatch_spec())
        ref = RunRef(424242, result.provider_run_id, "conformance", result.provider_state)
        sim = self.sim

        def after(fault: Callable[[], Any], call: Callable[[], Any]) -> Callable[[], Any]:
            def provoked() -> Any:
                sim.clear_faults()
                fault()
                return call()

            return provoked

        def poll_with_short_timeout() -> Any:
            with mock.patch.object(CursorAdapter, "timeout", (1.0, 0.3)):
                return adapter.poll_status(ref)

        def poll() -> Any:
            return adapter.poll_status(ref)

        def recover() -> Any:
            return adapter.recover_dispatch(self.dispatch_spec())

        return [
            ("poll 503", after(lambda: sim.fail_next(1, 503), poll)),
            ("poll hangs", after(lambda: sim.hang_next(1.0), poll_with_short_timeout)),
            ("poll 401", after(sim.revoke_tokens, poll)),
            ("stream 401", after(sim.revoke_tokens, lambda: adapter.fetch_logs(ref, {}))),
            ("cancel 500", after(lambda: sim.fail_next(1, 500), lambda: adapter.cancel(ref))),
            ("vanished", after(lambda: sim.vanish(ref.provider_run_id), poll)),
            ("recover 429", after(lambda: sim.rate_limit_next(1), recover)),
        ]
