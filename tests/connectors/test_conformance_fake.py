"""The conformance suite passes for the test adapters and catches adapters that
break the contract.

``FakeAdapter`` is the in-memory provider the dispatch tests use;
``HttpFakeAdapter`` is a minimal adapter that talks HTTP through
``connectors.http``, so the suite's HTTP checks (timeouts, User-Agent, a
provider echoing the credential) run against a real adapter here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import requests

from connectors import registry
from connectors.base import (
    CancelResult,
    Capabilities,
    DispatchResult,
    HealthResult,
    LogBatch,
    ProviderAdapter,
    RunRef,
    RunSpec,
    RunState,
)
from connectors.errors import ConnectorError
from connectors.http import raise_for_status
from tests.support.conformance import AdapterConformance
from tests.support.fake_adapter import FakeAdapter, use_fake_provider


class TestFakeConformance(AdapterConformance):
    adapter_class = FakeAdapter
    expects_http = False  # runs live in memory
    known_native_statuses = ("pending", "working", "blocked", "stopping", "done", "error")

    @pytest.fixture(autouse=True)
    def _registered(self, monkeypatch):
        use_fake_provider(monkeypatch)


class HttpFakeAdapter(FakeAdapter):
    """A small HTTP adapter: every call goes through the shared HTTP seam."""

    provider_id = "fake_http"
    label = "Fake HTTP provider"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secrets.get('apiKey', '')}"}

    def _call(self, method: str, path: str, what: str, **kwargs: Any) -> dict:
        secrets = self.secrets.secret_values()
        response = self.http.request(
            method, path, secrets=secrets, headers=self._headers(), **kwargs
        )
        raise_for_status(response, secrets=secrets, what=what)
        return response.json()

    def dispatch(self, spec: RunSpec) -> DispatchResult:
        body = self._call("POST", "/runs", "create run", json={"key": spec.dispatch_key})
        return DispatchResult(provider_run_id=str(body["id"]), provider_status_raw=body["status"])

    def recover_dispatch(self, spec: RunSpec) -> DispatchResult | None:
        body = self._call("GET", "/runs", "find run", params={"key": spec.dispatch_key})
        return None if not body.get("id") else DispatchResult(provider_run_id=str(body["id"]))

    def poll_status(self, ref: RunRef) -> RunState:
        body = self._call("GET", f"/runs/{ref.provider_run_id}", "poll run")
        return RunState(provider_status_raw=body["status"], status=self.map_status(body["status"]))

    def cancel(self, ref: RunRef) -> CancelResult:
        self._call("POST", f"/runs/{ref.provider_run_id}/cancel", "cancel run")
        return CancelResult()

    def fetch_logs(self, ref: RunRef, cursor: Mapping[str, Any]) -> LogBatch:
        self._call("GET", f"/runs/{ref.provider_run_id}/logs", "fetch logs")
        return LogBatch(entries=(), cursor=dict(cursor))

    def check_health(self) -> HealthResult:
        try:
            self._call("GET", "/me", "check credentials")
        except ConnectorError as exc:
            return HealthResult(ok=False, message=exc.message)
        return HealthResult(ok=True)


class TestHttpFakeConformance(AdapterConformance):
    adapter_class = HttpFakeAdapter

    @pytest.fixture(autouse=True)
    def _registered(self, monkeypatch):
        monkeypatch.setitem(registry.REGISTRY, "fake_http", HttpFakeAdapter)

    def provoke_errors(self, adapter):
        return [("poll unknown run", lambda: adapter.poll_status(self.run_ref(adapter)))]


# --- the suite catches broken adapters -----------------------------------------------------


def suite_for(adapter_cls: type, **attributes: Any) -> AdapterConformance:
    return type("Suite", (AdapterConformance,), {"adapter_class": adapter_cls, **attributes})()


def test_suite_fails_an_adapter_that_sends_without_a_timeout(monkeypatch):
    class NoTimeout(HttpFakeAdapter):
        def check_health(self) -> HealthResult:
            requests.get(f"{self.base_url}/me")
            return HealthResult(ok=False)

    with pytest.raises(AssertionError, match="without a timeout"):
        suite_for(NoTimeout).test_every_request_has_a_timeout_and_goes_through_the_http_seam(
            monkeypatch
        )


def test_suite_fails_an_adapter_that_bypasses_the_http_seam(monkeypatch):
    class OwnSession(HttpFakeAdapter):
        def check_health(self) -> HealthResult:
            requests.get(f"{self.base_url}/me", timeout=5)
            return HealthResult(ok=False)

    with pytest.raises(AssertionError, match=r"did not go through connectors\.http"):
        suite_for(OwnSession).test_every_request_has_a_timeout_and_goes_through_the_http_seam(
            monkeypatch
        )


def test_suite_fails_an_adapter_whose_repr_shows_the_secret():
    class LeakyRepr(FakeAdapter):
        def __repr__(self) -> str:
            return f"<LeakyRepr key={self.secrets.get('apiKey')}>"

    with pytest.raises(AssertionError, match="secret value appears"):
        suite_for(LeakyRepr).test_repr_and_str_never_show_secrets()


def test_suite_fails_an_adapter_that_repeats_the_providers_echo_of_the_secret(monkeypatch, caplog):
    class Echoing(HttpFakeAdapter):
        def poll_status(self, ref: RunRef) -> RunState:
            response = self.http.request("GET", f"/runs/{ref.provider_run_id}")
            raise_for_status(response)  # forgets secrets=: the echo is not scrubbed
            return RunState(provider_status_raw="done", status="succeeded")

    with pytest.raises(AssertionError, match="secret value appears"):
        suite_for(Echoing).test_secrets_never_reach_errors_results_or_logs(monkeypatch, caplog)


def test_suite_fails_an_adapter_that_raises_an_untyped_error(monkeypatch):
    class Untyped(FakeAdapter):
        def poll_status(self, ref: RunRef) -> RunState:
            raise KeyError(ref.provider_run_id)

    with pytest.raises(AssertionError, match="untyped errors"):
        suite_for(Untyped, expects_http=False).test_contract_calls_raise_only_typed_errors(
            monkeypatch
        )


def test_suite_fails_a_state_table_with_a_non_canonical_status():
    class OddStates(FakeAdapter):
        state_table = {"done": "finished"}

    with pytest.raises(AssertionError, match="not canonical"):
        suite_for(OddStates).test_state_table_maps_only_to_canonical_statuses()


def test_suite_fails_a_provoked_error_that_does_not_raise(monkeypatch):
    suite = suite_for(FakeAdapter, expects_http=False)
    suite.provoke_errors = lambda adapter: [("health", adapter.check_health)]

    with pytest.raises(AssertionError, match="should raise a typed error"):
        suite.test_provoked_errors_are_typed(monkeypatch)


def test_suite_fails_an_adapter_that_does_not_declare_its_input_kind():
    class Undeclared(ProviderAdapter):
        provider_id = "undeclared"
        label = "Undeclared"

        def dispatch(self, spec):
            raise NotImplementedError

        def poll_status(self, ref):
            raise NotImplementedError

        def check_health(self):
            return HealthResult(ok=True)

    with pytest.raises(AssertionError):
        suite_for(Undeclared).test_declares_its_input_kind()


def test_suite_fails_an_adapter_with_an_unknown_input_kind():
    class Shell(FakeAdapter):
        input_kind = "shell"

    with pytest.raises(AssertionError):
        suite_for(Shell).test_declares_its_input_kind()


def test_suite_fails_an_adapter_that_claims_follow_ups_without_the_hook():
    class Claims(FakeAdapter):
        CAPABILITIES = Capabilities(supports_follow_up=True)

    with pytest.raises(AssertionError):
        suite_for(Claims).test_follow_up_capability_matches_its_hooks()
