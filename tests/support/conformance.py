"""The shared conformance suite every adapter adopts with a one-line subclass.

Usage (in a test module under ``tests/``; the class name must start with
``Test`` so pytest collects it, the base class does not, so it is not)::

    from connectors.providers.local.adapter import LocalAdapter
    from tests.support.conformance import AdapterConformance

    class TestLocalConformance(AdapterConformance):
        adapter_class = LocalAdapter

What it checks, for every adapter: the contract methods exist and are
implemented; capabilities are a ``Capabilities``; the state table maps only to
canonical statuses and an unknown native value maps to ``None`` without
raising; config and secret fields are camelCase ``ConfigField`` s with disjoint
names; ``validate_config`` reports missing required settings and unknown keys
as field errors (``ConfigurationError``, nothing else); ``repr``/``str`` of an
adapter and of its ``Secrets`` never show a secret; the contract calls raise
only the typed family (``ConnectorError`` / ``ConfigurationError``) and
``check_health`` raises nothing. For adapters that call out (external ones),
every outbound request carries a timeout and our User-Agent (it went through
``connectors.http``), and no secret reaches an error message, a returned
value or a log record, even when the provider echoes the credential back.

HTTP during the suite. By default (``live_http = False``) nothing leaves the
process: ``requests.Session.request`` is replaced by a recorder that answers
each of ``canned_statuses`` in turn (401, 404, 429, 503) with a JSON error
body that echoes every secret value. A subclass that points the adapter at a
simulator on loopback sets ``live_http = True`` and overrides ``make_adapter``
(and usually ``run_ref`` and ``provoke_errors``); requests then pass through
to the simulator, and one to any host other than loopback fails the test.

Hooks and attributes (override in a subclass):

- ``adapter_class`` (required): the adapter under test.
- ``valid_settings``: settings ``validate_config`` accepts (default ``{}``).
- ``known_native_statuses``: every native status the provider documents; each
  must map to a canonical status (default: nothing extra to check).
- ``expects_http``: whether the contract calls make HTTP requests (default:
  ``kind == "external"``); an adapter expected to call out that makes no
  request fails, since the HTTP checks would prove nothing.
- ``live_http``, ``canned_statuses``: see above.
- ``make_secrets()``: credential values (default: a distinctive value per
  declared secret field).
- ``make_adapter()``: the adapter under test (default: cleaned
  ``valid_settings`` + ``make_secrets()``).
- ``dispatch_spec()``: the ``RunSpec`` passed to ``dispatch`` /
  ``recover_dispatch``.
- ``run_ref(adapter)``: the ``RunRef`` passed to ``poll_status``, ``cancel``,
  ``fetch_logs`` (default: a run the provider does not know).
- ``contract_calls(adapter)``: ``[(name, zero-argument callable)]`` the suite
  runs (default: dispatch (external only; local dispatch enqueues a real
  task), recover_dispatch, poll_status, cancel, fetch_logs, check_health).
- ``provoke_errors(adapter)``: ``[(name, callable)]`` that each MUST raise a
  typed error (e.g. make the simulator answer 401, 404, 429, 500 or hang);
  default none.
- ``canned_response(method, url, status)``: the stubbed answer.

Subclasses that need pytest fixtures (a running simulator) add an autouse
fixture method that stores what it needs on ``self``; the hooks read it.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlparse

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from connectors import registry
from connectors.base import (
    CANONICAL_STATUSES,
    INPUT_KINDS,
    TERMINAL,
    Capabilities,
    ConfigField,
    HealthResult,
    ProviderAdapter,
    RunRef,
    RunSpec,
    Secrets,
)
from connectors.errors import ConfigurationError, ConnectorError
from connectors.http import USER_AGENT, reset_clients

CONTRACT_METHODS = (
    "validate_config",
    "dispatch",
    "poll_status",
    "cancel",
    "fetch_logs",
    "capabilities",
    "check_health",
)
TYPED_ERRORS = (ConnectorError, ConfigurationError)
CAMEL_CASE = re.compile(r"^[a-z][a-zA-Z0-9]*$")
FIELD_KINDS = {"string", "url", "integer", "boolean", "object"}
UNKNOWN_NATIVE_STATUSES = (
    "",
    "zz-not-a-native-status",
    "completed/zz-not-a-conclusion",
    "ÉTAT INCONNU",
)
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# Extra secret a test adapter is built with, whether or not it declares secrets.
PROBE_SECRET = "conformance-probe-Zq81vLx04Tn"
Call = tuple[str, Callable[[], Any]]


@dataclass
class OutboundRequest:
    method: str
    url: str
    timeout: Any
    user_agent: str


@dataclass
class Exercise:
    """What one run of the contract calls produced."""

    requests: list[OutboundRequest] = field(default_factory=list)
    # (round, call name, returned value or raised exception)
    outcomes: list[tuple[str, str, Any]] = field(default_factory=list)

    def raised(self) -> list[tuple[str, str, Exception]]:
        return [(r, n, o) for r, n, o in self.outcomes if isinstance(o, Exception)]


class AdapterConformance:
    """Base of the per-adapter conformance classes (see the module docstring)."""

    adapter_class: ClassVar[type[ProviderAdapter]]
    valid_settings: ClassVar[dict[str, Any]] = {}
    known_native_statuses: ClassVar[tuple[str, ...]] = ()
    expects_http: ClassVar[bool | None] = None
    live_http: ClassVar[bool] = False
    canned_statuses: ClassVar[tuple[int, ...]] = (401, 404, 429, 503)

    # --- hooks ---------------------------------------------------------------

    def make_secrets(self) -> dict[str, str]:
        return {spec.name: f"conformance-{spec.name}-7Hq2xZ9pLw" for spec in self.secret_specs()}

    def make_adapter(self) -> ProviderAdapter:
        settings = self.adapter_class.validate_config(dict(self.valid_settings))
        return self.adapter_class(settings=settings, secrets=Secrets(self.make_secrets()))

    def dispatch_spec(self) -> RunSpec:
        return RunSpec(
            run_id=424242,
            dispatch_key="conformance-dispatch-key-0001",
            command="echo conformance",
            project_id=1,
            project_name="Conformance",
            workspace_root="/srv/conformance-workspace",
            feature_id="conformance",
            kind=getattr(self.adapter_class, "input_kind", "command"),
        )

    def run_ref(self, adapter: ProviderAdapter) -> RunRef:
        return RunRef(
            run_id=424242,
            provider_run_id="conformance-missing-run",
            dispatch_key="conformance-dispatch-key-0001",
        )

    def contract_calls(self, adapter: ProviderAdapter) -> list[Call]:
        spec = self.dispatch_spec()
        calls: list[Call] = []
        if adapter.kind == "external":
            calls.append(("dispatch", lambda: adapter.dispatch(spec)))
        calls += [
            ("recover_dispatch", lambda: adapter.recover_dispatch(spec)),
            ("poll_status", lambda: adapter.poll_status(self.run_ref(adapter))),
            ("cancel", lambda: adapter.cancel(self.run_ref(adapter))),
            ("fetch_logs", lambda: adapter.fetch_logs(self.run_ref(adapter), {})),
            ("check_health", adapter.check_health),
        ]
        return calls

    def provoke_errors(self, adapter: ProviderAdapter) -> list[Call]:
        return []

    def canned_response(self, method: str, url: str, status: int) -> requests.Response:
        """A provider error answer that echoes every secret (body and header)."""
        echoed = " ".join(v for v in self.make_secrets().values() if v)
        response = requests.Response()
        response.status_code = status
        response.url = url
        response.reason = "Canned"
        response.encoding = "utf-8"
        response.headers = CaseInsensitiveDict(
            {
                "Content-Type": "application/json",
                "Retry-After": "1",
                "X-Echo": echoed,
            }
        )
        response._content = json.dumps(
            {"message": f"rejected credential {echoed}", "error": {"message": f"bad {echoed}"}}
        ).encode()
        response.request = requests.Request(method, url).prepare()
        return response

    # --- helpers ---------------------------------------------------------------

    def secret_specs(self) -> tuple[ConfigField, ...]:
        return tuple(self.adapter_class.secret_fields)

    def all_secret_values(self) -> list[str]:
        return [v for v in self.make_secrets().values() if v] + [PROBE_SECRET]

    def calls_out(self) -> bool:
        if self.expects_http is not None:
            return self.expects_http
        return self.adapter_class.kind == "external"

    def assert_secret_free(self, text: str, where: str) -> None:
        for secret in self.all_secret_values():
            assert secret not in text, f"a secret value appears in {where}: {text[:300]!r}"

    def exercise(self, monkeypatch: pytest.MonkeyPatch, *, provoke: bool = False) -> Exercise:
        """Run the contract calls (or the provoked errors) with HTTP recorded.

        Canned mode runs one round per canned status; live mode one round.
        """
        report = Exercise()
        # unwrap: a second exercise in the same test must not record through the first
        original = inspect.unwrap(requests.Session.request)
        signature = inspect.signature(original)
        state = {"status": 200}

        def recording_request(session, *args, **kwargs):
            bound = signature.bind(session, *args, **kwargs)
            method, url = bound.arguments["method"], bound.arguments["url"]
            report.requests.append(
                OutboundRequest(
                    method=method,
                    url=url,
                    timeout=bound.arguments.get("timeout"),
                    user_agent=str(session.headers.get("User-Agent", "")),
                )
            )
            if self.live_http:
                host = urlparse(url).hostname
                assert host in LOOPBACK_HOSTS, (
                    f"{method} {url}: conformance tests only talk to loopback simulators"
                )
                return original(session, *args, **kwargs)
            return self.canned_response(method, url, state["status"])

        recording_request.__wrapped__ = original  # type: ignore[attr-defined]
        monkeypatch.setattr(requests.Session, "request", recording_request)
        rounds = ("live",) if self.live_http else tuple(str(s) for s in self.canned_statuses)
        for round_name in rounds:
            if not self.live_http:
                state["status"] = int(round_name)
            reset_clients()  # a 429 round must not shut the gate for the next one
            adapter = self.make_adapter()
            calls = self.provoke_errors(adapter) if provoke else self.contract_calls(adapter)
            for name, call in calls:
                try:
                    outcome = call()
                except AssertionError:
                    raise  # the recorder refused a request: a failure of the test itself
                except Exception as exc:  # the tests below judge what was raised
                    outcome = exc
                report.outcomes.append((round_name, name, outcome))
        reset_clients()
        return report

    # --- identity and contract -------------------------------------------------------

    def test_is_registered_under_its_provider_id(self):
        cls = self.adapter_class
        assert isinstance(cls.provider_id, str) and cls.provider_id
        assert isinstance(cls.label, str) and cls.label
        assert cls.kind in ("local", "external")
        assert registry.REGISTRY.get(cls.provider_id) is cls, (
            f"REGISTRY[{cls.provider_id!r}] is not {cls.__name__}"
        )

    def test_contract_methods_exist_and_are_implemented(self):
        cls = self.adapter_class
        for name in CONTRACT_METHODS:
            assert callable(getattr(cls, name, None)), f"{cls.__name__}.{name} is missing"
        assert not getattr(cls, "__abstractmethods__", frozenset()), (
            f"{cls.__name__} leaves abstract methods: {sorted(cls.__abstractmethods__)}"
        )
        assert isinstance(self.make_adapter(), ProviderAdapter)

    def test_capabilities_are_a_capabilities(self):
        assert isinstance(self.adapter_class.capabilities(), Capabilities)
        capabilities = self.make_adapter().capabilities()
        assert isinstance(capabilities, Capabilities)
        assert set(capabilities.as_api()) == {
            "supportsStreaming",
            "supportsCancel",
            "supportsArtifacts",
            "supportsResume",
            "supportsFollowUp",
        }

    def test_declares_its_input_kind(self):
        # Routing keeps a run on adapters of its kind: an adapter that does not
        # say what it takes could receive prose as a command line.
        assert getattr(self.adapter_class, "input_kind", None) in INPUT_KINDS

    def test_follow_up_capability_matches_its_hooks(self):
        # A provider that claims follow-ups starts new work on a finished run's
        # agent, and answers runs that wait for their user if it has any.
        cls = self.adapter_class
        if not cls.capabilities().supports_follow_up:
            return
        assert cls.follow_up is not ProviderAdapter.follow_up
        if "waiting" in cls.state_table.values():
            assert cls.send_message is not ProviderAdapter.send_message

    # --- state mapping ---------------------------------------------------------------

    def test_state_table_maps_only_to_canonical_statuses(self):
        table = self.adapter_class.state_table
        assert table, f"{self.adapter_class.__name__} declares no state table"
        for native, canonical in table.items():
            assert isinstance(native, str) and native, f"bad native key {native!r}"
            assert canonical in CANONICAL_STATUSES, f"{native!r} → {canonical!r} is not canonical"
            assert self.adapter_class.map_status(native) == canonical

    def test_state_table_reaches_a_finished_status(self):
        assert set(self.adapter_class.state_table.values()) & TERMINAL

    def test_every_documented_native_status_maps(self):
        unmapped = [
            native
            for native in self.known_native_statuses
            if self.adapter_class.map_status(native) not in CANONICAL_STATUSES
        ]
        assert not unmapped, f"native statuses without a canonical status: {unmapped}"

    def test_unknown_native_status_maps_to_none_without_raising(self):
        for native in UNKNOWN_NATIVE_STATUSES:
            assert self.adapter_class.map_status(native) is None, native

    # --- declared fields and validation ---------------------------------------------------

    def test_config_and_secret_fields_are_camel_case_config_fields(self):
        config = tuple(self.adapter_class.config_fields)
        secrets = tuple(self.adapter_class.secret_fields)
        for spec in config + secrets:
            assert isinstance(spec, ConfigField), spec
            assert CAMEL_CASE.fullmatch(spec.name), f"{spec.name!r} is not camelCase"
            assert spec.label, f"{spec.name} has no label"
            assert spec.kind in FIELD_KINDS, f"{spec.name} has kind {spec.kind!r}"
        for spec in secrets:
            assert spec.kind == "string", f"secret {spec.name} must be a string"
        config_names = [f.name for f in config]
        secret_names = [f.name for f in secrets]
        assert len(set(config_names)) == len(config_names), "duplicate setting names"
        assert len(set(secret_names)) == len(secret_names), "duplicate secret names"
        assert not set(config_names) & set(secret_names), "a name is both setting and secret"

    def test_valid_settings_are_accepted(self):
        cleaned = self.adapter_class.validate_config(dict(self.valid_settings))
        assert isinstance(cleaned, dict)

    def test_empty_settings_report_missing_required_fields_as_field_errors(self):
        required = {
            f.name for f in self.adapter_class.config_fields if f.required and f.default is None
        }
        try:
            cleaned = self.adapter_class.validate_config({})
        except ConfigurationError as exc:
            assert required, f"no required setting, yet {{}} was rejected: {exc.field_errors}"
            assert required <= set(exc.field_errors), (
                f"missing required settings not reported: {required - set(exc.field_errors)}"
            )
        else:
            assert not required, f"{{}} accepted although {sorted(required)} are required"
            assert isinstance(cleaned, dict)

    def test_unknown_setting_is_rejected_as_a_field_error(self):
        with pytest.raises(ConfigurationError) as caught:
            self.adapter_class.validate_config({**self.valid_settings, "zzUnknownSetting": "x"})
        assert "zzUnknownSetting" in caught.value.field_errors

    def test_unknown_credential_field_is_rejected_as_a_field_error(self):
        with pytest.raises(ConfigurationError) as caught:
            self.adapter_class.validate_secrets({**self.make_secrets(), "zzUnknownSecret": "x"})
        assert "zzUnknownSecret" in caught.value.field_errors
        for message in caught.value.field_errors.values():
            self.assert_secret_free(str(message), "a credential validation error")

    def test_declared_secrets_are_accepted(self):
        cleaned = self.adapter_class.validate_secrets(self.make_secrets())
        assert set(cleaned) == set(self.make_secrets())

    # --- secrecy -------------------------------------------------------------------------

    def test_repr_and_str_never_show_secrets(self):
        adapter = self.make_adapter()
        probed = self.adapter_class(
            settings=adapter.settings,
            secrets=Secrets({**self.make_secrets(), "conformanceProbe": PROBE_SECRET}),
        )
        for candidate in (adapter, probed):
            for text in (repr(candidate), str(candidate), repr(candidate.secrets)):
                self.assert_secret_free(text, f"repr/str of {type(candidate).__name__}")
            self.assert_secret_free(str(candidate.secrets), "str(Secrets)")

    def test_secrets_never_reach_errors_results_or_logs(self, monkeypatch, caplog):
        caplog.set_level(logging.DEBUG)
        report = self.exercise(monkeypatch)
        provoked = self.exercise(monkeypatch, provoke=True)
        report.outcomes += provoked.outcomes
        report.requests += provoked.requests
        for round_name, name, outcome in report.outcomes:
            where = f"{name} (round {round_name})"
            if isinstance(outcome, Exception):
                for text in (str(outcome), repr(outcome), repr(outcome.args)):
                    self.assert_secret_free(text, f"the error of {where}")
            else:
                self.assert_secret_free(repr(outcome), f"the result of {where}")
        for sent in report.requests:
            self.assert_secret_free(sent.url, f"the URL of a {sent.method} request")
        for record in caplog.records:
            self.assert_secret_free(record.getMessage(), f"log record {record.name}")
            if record.exc_info:
                formatted = logging.Formatter().formatException(record.exc_info)
                self.assert_secret_free(formatted, f"traceback logged by {record.name}")

    # --- errors and HTTP -------------------------------------------------------------------

    def test_contract_calls_raise_only_typed_errors(self, monkeypatch):
        report = self.exercise(monkeypatch)
        assert report.outcomes, "no contract call was exercised"
        untyped = [
            f"{name} (round {round_name}): {type(exc).__name__}"
            for round_name, name, exc in report.raised()
            if not isinstance(exc, TYPED_ERRORS)
        ]
        assert not untyped, f"untyped errors: {untyped}"

    def test_check_health_answers_instead_of_raising(self, monkeypatch):
        report = self.exercise(monkeypatch)
        health = [(r, o) for r, name, o in report.outcomes if name == "check_health"]
        for round_name, outcome in health:
            assert isinstance(outcome, HealthResult), (
                f"check_health (round {round_name}) gave {type(outcome).__name__}, "
                "not a HealthResult"
            )
            if not self.live_http and self.calls_out():
                assert not outcome.ok, f"an HTTP {round_name} answer was reported healthy"

    def test_provoked_errors_are_typed(self, monkeypatch):
        report = self.exercise(monkeypatch, provoke=True)
        for round_name, name, outcome in report.outcomes:
            assert isinstance(outcome, TYPED_ERRORS), (
                f"{name} (round {round_name}) should raise a typed error, got {outcome!r}"
            )

    def test_every_request_has_a_timeout_and_goes_through_the_http_seam(self, monkeypatch):
        report = self.exercise(monkeypatch)
        report.requests += self.exercise(monkeypatch, provoke=True).requests
        if self.calls_out():
            assert report.requests, (
                f"{self.adapter_class.__name__} made no HTTP request; set expects_http = False "
                "if it never calls out"
            )
        for sent in report.requests:
            timeouts = sent.timeout if isinstance(sent.timeout, tuple) else (sent.timeout,)
            assert sent.timeout is not None and None not in timeouts, (
                f"{sent.method} {sent.url} was sent without a timeout"
            )
            assert sent.user_agent == USER_AGENT, (
                f"{sent.method} {sent.url} did not go through connectors.http"
            )
