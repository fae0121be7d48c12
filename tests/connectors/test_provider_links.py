"""providerUrl is shown as a link: only http(s) URLs are ever kept or answered."""

from __future__ import annotations

import pytest

from connectors.base import DispatchResult, RunState
from connectors.links import web_url
from tests.factories import RunFactory

SAFE = ["https://github.com/o/r/actions/runs/1", "http://127.0.0.1:8701/o/r", "HTTPS://x.dev/a"]
UNSAFE = [
    "javascript:alert(document.cookie)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "//evil.example/x",
    "/relative/path",
    "https://",
    "http:///nohost",
    "https://[::1",
    None,
    42,
]


@pytest.mark.parametrize("url", SAFE)
def test_http_and_https_urls_are_kept(url):
    assert web_url(url) == url


@pytest.mark.parametrize("url", UNSAFE)
def test_other_schemes_and_malformed_urls_become_empty(url):
    assert web_url(url) == ""


@pytest.mark.parametrize("url", UNSAFE[:7])
def test_what_an_adapter_returns_is_filtered_before_it_is_stored(url):
    # Every adapter's dispatch and poll answers pass through these dataclasses.
    assert DispatchResult(provider_run_id="1", provider_url=url).provider_url == ""
    assert RunState(provider_status_raw="x", status=None, provider_url=url).provider_url == ""
    assert DispatchResult(provider_run_id="1", provider_url=SAFE[0]).provider_url == SAFE[0]


@pytest.mark.django_db
def test_the_api_never_answers_a_stored_javascript_url(project, operator_client):
    # A row written before the filter existed.
    run = RunFactory(project=project, provider_url="javascript:alert(1)")
    good = RunFactory(project=project, provider_url=SAFE[0])

    one = operator_client.get(f"/api/execution/runs/{run.pk}").json()
    listed = operator_client.get("/api/execution/runs").json()["results"]

    assert one["providerUrl"] == ""
    assert {r["id"]: r["providerUrl"] for r in listed} == {run.pk: "", good.pk: SAFE[0]}
