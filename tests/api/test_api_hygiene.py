"""Every /api/ error is the JSON error format, ids out of range never reach the
database as a 500, and error.fields has the shape the schema declares."""

from __future__ import annotations

import json

import pytest
from rest_framework import serializers

from ccdash.api.errors import exception_handler, normalize_field_errors
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

BIG = "100000000000000000000"  # > 2**63


def assert_json_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    error = json.loads(response.content)["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    if code:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    "path", ["/api/nope", "/api/execution/nope", "/api/execution/runs/1/nope", "/api/projects/x/"]
)
def test_unknown_api_paths_are_json_404(operator_client, path):
    assert_json_error(operator_client.get(path), 404, "not_found")


def test_unknown_api_paths_are_json_404_for_anonymous_too(anon_client):
    assert_json_error(anon_client.post("/api/nothing-here", {}, "json"), 404, "not_found")


def test_pages_outside_the_api_keep_their_html_404(operator_client):
    response = operator_client.get("/no-such-page")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_a_3mb_body_is_json_413(project, operator_client):
    body = json.dumps({"projectId": project.pk, "command": "x" * (3 * 1024 * 1024)})

    response = operator_client.post("/api/execution/runs", body, content_type="application/json")

    assert_json_error(response, 413, "payload_too_large")


def test_a_3mb_body_is_json_413_before_authentication(anon_client):
    response = anon_client.post(
        "/api/auth/token/", "x" * (3 * 1024 * 1024), content_type="application/json"
    )

    assert_json_error(response, 413, "payload_too_large")


@pytest.mark.parametrize("body", ['{"projectId": 1,', "not json", '{"a": "\\ud800"'])
def test_malformed_json_is_a_json_400(project, operator_client, body):
    response = operator_client.post("/api/execution/runs", body, content_type="application/json")

    assert_json_error(response, 400)


def test_a_method_the_endpoint_lacks_is_json_405(operator_client):
    response = operator_client.delete("/api/execution/runs")

    assert_json_error(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"]


@pytest.mark.parametrize(
    "url",
    [
        f"/api/execution/runs?projectId={BIG}",
        "/api/execution/runs?projectId=-1",
        f"/api/execution/runs/{BIG}",
        f"/api/execution/runs/{BIG}/events",
        "/api/execution/runs/99999999999999999999",
        f"/api/execution/runs?offset={BIG}&limit={BIG}",
        f"/api/projects/{BIG}/",
        f"/api/projects/{BIG}/members",
        f"/api/execution/providers?projectId={BIG}",
    ],
)
def test_out_of_range_ids_are_400_or_404(project, operator_client, url):
    response = operator_client.get(url)

    assert response.status_code in (200, 400, 404), response.content[:300]
    if response.status_code != 200:
        assert_json_error(response, response.status_code)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/execution/runs", {"projectId": int(BIG), "command": "echo"}),
        ("/api/execution/policy-check", {"projectId": int(BIG), "command": "echo"}),
        ("/api/execution/runs/1/events?afterSequence=" + BIG, None),
    ],
)
def test_out_of_range_ids_in_bodies_are_400_or_404(project, admin_client, path, body):
    if body is None:
        response = admin_client.get(path)
    else:
        response = admin_client.post(path, body, format="json")

    assert response.status_code in (400, 404), response.content[:300]


def test_nested_field_errors_are_flattened_to_dotted_names():
    class Inner(serializers.Serializer):
        baseUrl = serializers.URLField()

    class Outer(serializers.Serializer):
        settings = Inner()
        items = Inner(many=True)
        tags = serializers.ListField(child=serializers.IntegerField())

    items = [{"baseUrl": "https://example.com"}, {}]
    body = Outer(data={"settings": {"baseUrl": "x"}, "items": items, "tags": ["a"]})
    assert not body.is_valid()
    try:
        body.is_valid(raise_exception=True)
    except serializers.ValidationError as exc:
        response = exception_handler(exc, {})

    fields = response.data["error"]["fields"]
    assert fields == {
        "settings": {"baseUrl": ["Enter a valid URL."]},
        "items": {"1.baseUrl": ["This field is required."]},
        "tags": {"0": ["A valid integer is required."]},
    }


def test_flat_errors_stay_flat_and_bare_lists_are_nonfield():
    assert normalize_field_errors({"command": ["Required."]}) == {"command": ["Required."]}
    assert normalize_field_errors(["Bad."]) == {"nonField": ["Bad."]}
    deep = {"settings": {"a": {"b": ["x"]}}}
    assert normalize_field_errors(deep) == {"settings": {"a.b": ["x"]}}


def matches_schema(fields: dict) -> bool:
    """The FieldErrorsField schema: name → [str] or name → {sub → [str]}."""

    def messages(value) -> bool:
        return isinstance(value, list) and all(isinstance(m, str) for m in value)

    return all(
        messages(value) or (isinstance(value, dict) and all(messages(v) for v in value.values()))
        for value in fields.values()
    )


def test_provider_settings_errors_have_the_schema_shape(project, admin_client):
    response = admin_client.put(
        "/api/execution/providers/github_actions/config",
        {"projectId": project.pk, "settings": {"baseUrl": {"deep": ["x"]}, "nope": 1}},
        format="json",
    )

    error = assert_json_error(response, 400)
    assert matches_schema(error["fields"]), error


def test_a_json_array_body_is_a_field_error_of_the_schema_shape(project, operator_client):
    response = operator_client.post("/api/execution/runs", [1, 2], format="json")

    error = assert_json_error(response, 400, "invalid")
    assert matches_schema(error["fields"])


def test_a_server_error_under_the_api_is_json(project, admin_member, monkeypatch):
    from execution.api import views

    def boom(*args, **kwargs):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(views.policy_gate, "evaluate_for", boom)
    client = client_for(admin_member)
    client.raise_request_exception = False

    response = client.post(
        "/api/execution/policy-check", {"projectId": project.pk, "command": "echo"}, "json"
    )

    assert_json_error(response, 500, "server_error")
    assert "unexpected" not in response.content.decode()
