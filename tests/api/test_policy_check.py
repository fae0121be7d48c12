"""Spec §5 ``POST policy-check``: the decision a run would get, nothing created."""

from __future__ import annotations

import pytest

from execution.models import Run
from tests.api.helpers import error_code

pytestmark = pytest.mark.django_db

URL = "/api/execution/policy-check"


def check(client, project, command: str, **extra):
    return client.post(URL, {"projectId": project.pk, "command": command, **extra}, "json")


def test_allowed_command(project, operator_client):
    response = check(operator_client, project, "echo hi")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "kind",
        "verdict",
        "riskLevel",
        "reasonCodes",
        "messages",
        "requiresApproval",
    }
    assert body["kind"] == "command"
    assert body["verdict"] == "allow"
    assert body["riskLevel"] == "low"
    assert body["requiresApproval"] is False
    assert not Run.objects.exists()


def test_destructive_command_is_denied(project, operator_client):
    body = check(operator_client, project, "rm -rf /").json()

    assert body["verdict"] == "deny"
    assert body["riskLevel"] == "high"
    assert "destructive_command" in body["reasonCodes"]
    assert body["messages"]


def test_network_command_requires_approval(project, operator_client):
    body = check(operator_client, project, "curl https://example.com").json()

    assert body["verdict"] == "requires_approval"
    assert body["requiresApproval"] is True
    assert "network_command" in body["reasonCodes"]


def test_cwd_outside_workspace_and_unknown_env_profile_are_denied(
    project, operator_client, tmp_path
):
    outside = check(operator_client, project, "ls", cwd=str(tmp_path)).json()
    profile = check(operator_client, project, "ls", envProfile="no-such-profile").json()

    assert outside["verdict"] == "deny"
    assert "cwd_outside_workspace" in outside["reasonCodes"]
    assert profile["verdict"] == "deny"
    assert "env_profile_unknown" in profile["reasonCodes"]


def test_a_viewer_may_check(project, viewer_client):
    assert check(viewer_client, project, "echo hi").status_code == 200


def test_another_projects_id_is_404(operator_client, other_project):
    response = check(operator_client, other_project, "echo hi")

    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_missing_command_is_a_field_error(project, operator_client):
    response = operator_client.post(URL, {"projectId": project.pk}, "json")

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"command"}
