"""OpenAPI schema and docs (spec §5): valid, warning-free, served offline."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.core.management import call_command
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

SPEC_PATHS = [
    "/api/auth/token/",
    "/api/projects/",
    "/api/projects/{id}/",
    "/api/projects/{id}/members",
    "/api/execution/policy-check",
    "/api/execution/runs",
    "/api/execution/runs/{id}",
    "/api/execution/runs/{id}/events",
    "/api/execution/runs/{id}/approve",
    "/api/execution/runs/{id}/reject",
    "/api/execution/runs/{id}/cancel",
    "/api/execution/runs/{id}/retry",
    "/api/execution/runs/{id}/reconcile",
]


def test_schema_validates_without_warnings(tmp_path):
    # Raises SchemaGenerationError on any warning or validation error.
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml")
    )


def test_schema_is_served_and_lists_the_spec_paths():
    response = APIClient().get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    paths = response.json()["paths"]
    assert set(SPEC_PATHS) <= set(paths)


def test_schema_documents_the_event_page_and_run_fields():
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    components = schema["components"]["schemas"]

    assert set(components["EventPage"]["properties"]) == {"items", "nextSequence"}
    assert {"syncStatus", "providerRunId", "approvedBy", "degraded"} <= set(
        components["Run"]["properties"]
    )
    retry = schema["paths"]["/api/execution/runs/{id}/retry"]["post"]["responses"]
    assert "201" in retry


def test_schema_documents_run_kinds_follow_ups_and_project_settings():
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    components, paths = schema["components"]["schemas"], schema["paths"]

    run = components["Run"]["properties"]
    assert {"kind", "prompt", "command", "followUpOfRunId"} <= set(run)
    assert components["RunKindEnum"]["enum"] == ["command", "prompt"]
    assert {"command", "prompt", "providerId"} <= set(components["RunCreateRequest"]["properties"])
    assert "prompt" in components["PolicyCheckRequestRequest"]["properties"]
    assert "providerId" in components["PolicyCheckRequestRequest"]["properties"]
    assert "kind" in components["PolicyCheck"]["properties"]
    assert "inputKind" in components["Provider"]["properties"]
    assert "supportsFollowUp" in components["Capabilities"]["properties"]

    messages = paths["/api/execution/runs/{id}/messages"]["post"]
    assert set(messages["responses"]) >= {"200", "400", "409"}
    body = messages["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert set(components[body.rsplit("/", 1)[1]]["properties"]) == {"text"}
    follow_up = paths["/api/execution/runs/{id}/follow-up"]["post"]
    assert set(follow_up["responses"]) >= {"201", "400", "409"}
    body = follow_up["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert set(components[body.rsplit("/", 1)[1]]["properties"]) == {"prompt"}

    patch = paths["/api/projects/{id}/"]["patch"]
    body = patch["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert {
        "agentRunsRequireApproval",
        "promptPatterns",
        "maxPromptLength",
        "agentFallbackChain",
    } <= set(components[body.rsplit("/", 1)[1]]["properties"])


def test_docs_load_no_asset_from_the_internet():
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert not re.search(r"https?://", html), "docs must not reference an external URL"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, "the page should load its assets from our static files"
    for asset in assets:
        assert asset.startswith("/static/"), asset
        assert finders.find(asset.removeprefix("/static/")), f"{asset} is not installed"


def test_schema_documents_what_the_security_fixes_answer():
    schema = APIClient().get("/api/schema/", {"format": "json"}).json()
    paths = schema["paths"]

    create = paths["/api/execution/runs"]["post"]["responses"]
    assert "idempotency_key_reused" in create["409"]["description"]
    assert {"200", "201"} <= set(paths["/api/execution/runs/{id}/retry"]["post"]["responses"])
    assert "403" in paths["/api/projects/"]["post"]["responses"]
    assert "429" in paths["/api/auth/token/"]["post"]["responses"]
    assert "/api/auth/logout/" in paths
    token = schema["components"]["schemas"]["Token"]["properties"]
    assert set(token) == {"token", "expiry"}
    fields = schema["components"]["schemas"]["ErrorDetail"]["properties"]["fields"]
    shapes = fields["additionalProperties"]["oneOf"]
    assert {"type": "array", "items": {"type": "string"}} in shapes
    assert "allowSelfApproval" in schema["components"]["schemas"]["Project"]["properties"]
