"""The one HTTP pipeline every external adapter goes through (``HttpAdapter``):
credentials, one status/JSON error table, redirects without credentials."""

from __future__ import annotations

import re

import pytest
import responses

from connectors.base import RunRef, Secrets
from connectors.errors import ConfigurationError, InvalidResponse, PermanentError
from connectors.http_adapter import HttpAdapter
from connectors.registry import REGISTRY

API = "https://api.provider.test"
OTHER = "https://elsewhere.test"
SETTINGS = {
    "github_actions": {"owner": "o", "repo": "r", "workflow": "agent.yml"},
    "cursor": {"repository": "https://github.com/o/r"},
    "devin": {},
}
SECRET = "s3cr3t-value-for-the-pipeline"
EXTERNAL = sorted(SETTINGS)


@pytest.fixture(autouse=True)
def _allow_the_test_api(settings):
    settings.CONNECTORS_ALLOWED_HOSTS = ["api.provider.test"]


def make(provider_id: str, *, with_secret: bool = True):
    cls = REGISTRY[provider_id]
    settings = cls.validate_config({**SETTINGS[provider_id], "baseUrl": API})
    secrets = {f.name: SECRET for f in cls.secret_fields} if with_secret else {}
    return cls(settings, Secrets(secrets))


def ref(provider_id: str) -> RunRef:
    return RunRef(1, "123", "key", {"agentId": "bc-1"})


def test_every_external_adapter_uses_the_pipeline():
    for provider_id in EXTERNAL:
        adapter = REGISTRY[provider_id]
        assert issubclass(adapter, HttpAdapter)
        own = {"_request", "_call", "_check", "_send", "_raise_for", "_json", "_body"}
        assert not own & set(vars(adapter)), provider_id


@pytest.mark.parametrize("provider_id", EXTERNAL)
@responses.activate
def test_a_missing_credential_raises_before_anything_is_sent(provider_id):
    adapter = make(provider_id, with_secret=False)

    with pytest.raises(ConfigurationError):
        adapter.poll_status(ref(provider_id))

    assert len(responses.calls) == 0


@pytest.mark.parametrize("provider_id", EXTERNAL)
@responses.activate
def test_a_health_check_without_credentials_reports_it_without_sending(provider_id):
    health = make(provider_id, with_secret=False).check_health()

    assert not health.ok
    assert len(responses.calls) == 0


@pytest.mark.parametrize("provider_id", EXTERNAL)
@responses.activate
def test_an_answer_that_is_not_json_is_the_same_error_for_every_provider(provider_id):
    responses.add_callback(
        responses.GET,
        re.compile(f"{API}/.*"),
        callback=lambda request: (200, {"Content-Type": "text/html"}, "<html>proxy</html>"),
    )

    with pytest.raises(InvalidResponse) as raised:
        make(provider_id).poll_status(ref(provider_id))

    assert raised.value.kind == "invalid_response"


@pytest.mark.parametrize("provider_id", EXTERNAL)
@responses.activate
def test_a_redirect_to_another_host_is_not_followed_and_gets_no_credentials(provider_id):
    responses.add_callback(
        responses.GET,
        re.compile(f"{API}/.*"),
        callback=lambda request: (302, {"Location": f"{OTHER}/steal"}, ""),
    )
    responses.add(responses.GET, f"{OTHER}/steal", json={"status": "RUNNING"})

    with pytest.raises(PermanentError) as raised:
        make(provider_id).poll_status(ref(provider_id))

    assert "elsewhere.test" in raised.value.message
    assert [call.request.url for call in responses.calls if OTHER in call.request.url] == []


@responses.activate
def test_a_redirect_within_the_api_origin_is_followed():
    responses.add(
        responses.GET,
        f"{API}/repos/o/r/actions/runs/123",
        status=301,
        headers={"Location": f"{API}/repositories/9/actions/runs/123"},
    )
    responses.add(
        responses.GET,
        f"{API}/repositories/9/actions/runs/123",
        json={"id": 123, "status": "in_progress", "conclusion": None, "html_url": ""},
    )

    state = make("github_actions").poll_status(ref("github_actions"))

    assert state.status == "running"
    assert responses.calls[1].request.headers["Authorization"] == f"Bearer {SECRET}"
