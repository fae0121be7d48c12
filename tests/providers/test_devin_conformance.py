"""The shared adapter conformance suite, run live against the Devin simulator."""

from __future__ import annotations

from unittest import mock

import pytest

from connectors.base import ProviderAdapter, RunRef, Secrets
from connectors.providers.devin.adapter import DevinAdapter
from connectors.providers.devin.simulator import DevinSimulator
from tests.support.conformance import AdapterConformance, Call


class TestDevinConformance(AdapterConformance):
    adapter_class = DevinAdapter
    live_http = True
    valid_settings = {"tags": "team-a, nightly"}
    known_native_statuses = (
        "working",
        "blocked",
        "finished",
        "expired",
        "suspend_requested",
        "suspend_requested_frontend",
        "resume_requested",
        "resume_requested_frontend",
        "resumed",
    )

    @pytest.fixture(autouse=True)
    def _simulator(self, devin_sim):
        self.sim = devin_sim
        self.session_id = ""

    def make_secrets(self) -> dict[str, str]:
        return {"apiKey": DevinSimulator.default_token}

    def make_adapter(self) -> ProviderAdapter:
        settings = DevinAdapter.validate_config({**self.valid_settings, "baseUrl": self.sim.url})
        return DevinAdapter(settings=settings, secrets=Secrets(self.make_secrets()))

    def run_ref(self, adapter: ProviderAdapter) -> RunRef:
        # A real session, so poll, cancel and fetch_logs take their success paths.
        if not self.session_id:
            (self.session_id,) = self.sim.seed(1, "working", prompt="conformance")
        return RunRef(424242, self.session_id, "conformance-dispatch-key-0001")

    def provoke_errors(self, adapter: ProviderAdapter) -> list[Call]:
        ref = self.run_ref(adapter)

        def server_error():
            self.sim.fail_next(1, status=503)
            return adapter.poll_status(ref)

        def revoked():
            self.sim.revoke_tokens()
            try:
                return adapter.fetch_logs(ref, {})
            finally:
                self.sim.clear_faults()

        def hung():
            self.sim.hang_next(2.0)
            with mock.patch.object(DevinAdapter, "timeout", (1.0, 0.3)):
                return adapter.cancel(ref)

        def vanished():
            self.sim.vanish(ref.provider_run_id)
            return adapter.poll_status(ref)

        def rate_limited():  # last: it shuts the endpoint's gate for a second
            self.sim.rate_limit_next(1, retry_after=1)
            return adapter.recover_dispatch(self.dispatch_spec())

        return [
            ("poll_status 503", server_error),
            ("fetch_logs 401", revoked),
            ("cancel hangs", hung),
            ("poll_status 404", vanished),
            ("recover_dispatch 429", rate_limited),
        ]
