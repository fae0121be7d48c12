"""``PATCH /api/projects/{id}/``: project admins change settings, each change
audited with its old and new value; anything else is a clear 4xx."""

from __future__ import annotations

import pytest

from ccdash.models import AuditLog
from tests.api.helpers import error_code
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


def url(project) -> str:
    return f"/api/projects/{project.pk}/"


def test_an_admin_changes_agent_settings_and_each_change_is_audited(admin_client, project):
    patterns = [{"pattern": r"force[- ]push", "reasonCode": "force_push"}]

    response = admin_client.patch(
        url(project),
        {
            "agentRunsRequireApproval": True,
            "promptPatterns": patterns,
            "maxPromptLength": 5000,
            "agentFallbackChain": ["cursor", "devin"],
            "allowFallbackToLocal": False,
        },
        format="json",
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["agentRunsRequireApproval"] is True
    assert body["promptPatterns"] == patterns
    assert body["maxPromptLength"] == 5000
    assert body["agentFallbackChain"] == ["cursor", "devin"]
    assert body["allowFallbackToLocal"] is False
    project.refresh_from_db()
    assert project.agent_fallback_chain == ["cursor", "devin"]
    audits = {
        a.payload["setting"]: a
        for a in AuditLog.objects.filter(project=project, action="project_setting_changed")
    }
    assert set(audits) == {
        "agentRunsRequireApproval",
        "promptPatterns",
        "maxPromptLength",
        "agentFallbackChain",
        "allowFallbackToLocal",
    }
    assert audits["maxPromptLength"].payload == {
        "setting": "maxPromptLength",
        "old": 20_000,
        "new": 5000,
    }
    assert audits["agentFallbackChain"].payload["old"] == []
    assert audits["agentFallbackChain"].actor == f"admin-{project.pk}"


def test_the_existing_settings_are_editable_too(admin_client, project):
    response = admin_client.patch(
        url(project),
        {"name": "Renamed", "defaultProviderId": "cursor", "allowSelfApproval": True},
        format="json",
    )

    assert response.status_code == 200, response.content
    project.refresh_from_db()
    assert (project.name, project.default_provider_id, project.allow_self_approval) == (
        "Renamed",
        "cursor",
        True,
    )


def test_an_unchanged_value_is_not_audited(admin_client, project):
    response = admin_client.patch(url(project), {"maxPromptLength": 20_000}, format="json")

    assert response.status_code == 200
    assert not AuditLog.objects.filter(action="project_setting_changed").exists()


def test_an_unknown_field_is_a_400_naming_it_and_changes_nothing(admin_client, project):
    response = admin_client.patch(
        url(project), {"maxPromptLength": 10, "promptPolicy": "lax"}, format="json"
    )

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"promptPolicy"}
    project.refresh_from_db()
    assert project.max_prompt_length == 20_000


def test_the_workspace_root_is_not_editable(admin_client, project):
    response = admin_client.patch(url(project), {"workspaceRoot": "/"}, format="json")

    assert response.status_code == 400
    assert "workspaceRoot" in response.json()["error"]["fields"]


def test_a_bad_regular_expression_is_a_400_that_names_it(admin_client, project):
    response = admin_client.patch(
        url(project),
        {"promptPatterns": [{"pattern": "deploy (prod", "reasonCode": "production"}]},
        format="json",
    )

    assert response.status_code == 400
    assert "deploy (prod" in str(response.json()["error"]["fields"]["promptPatterns"])


def test_a_reason_code_must_be_snake_case(admin_client, project):
    response = admin_client.patch(
        url(project),
        {"promptPatterns": [{"pattern": "prod", "reasonCode": "Prod Deploy!"}]},
        format="json",
    )

    assert response.status_code == 400
    assert error_code(response) == "invalid"


@pytest.mark.parametrize(
    "chain",
    [["local"], ["github_actions"], ["nope"], ["cursor", "cursor"]],
    ids=["local", "command-provider", "unknown", "duplicate"],
)
def test_the_agent_fallback_chain_takes_distinct_prompt_providers_only(
    admin_client, project, chain
):
    response = admin_client.patch(url(project), {"agentFallbackChain": chain}, format="json")

    assert response.status_code == 400
    assert "agentFallbackChain" in response.json()["error"]["fields"]


@pytest.mark.parametrize("value", [0, -1, 100_001, "many"])
def test_max_prompt_length_must_be_a_sensible_integer(admin_client, project, value):
    response = admin_client.patch(url(project), {"maxPromptLength": value}, format="json")

    assert response.status_code == 400
    assert "maxPromptLength" in response.json()["error"]["fields"]


def test_below_admin_is_a_403(approver, project):
    response = client_for(approver).patch(
        url(project), {"agentRunsRequireApproval": True}, format="json"
    )

    assert response.status_code == 403
    project.refresh_from_db()
    assert project.agent_runs_require_approval is False


def test_another_projects_settings_are_a_404(admin_client, other_project):
    response = admin_client.patch(
        url(other_project), {"agentRunsRequireApproval": True}, format="json"
    )

    assert response.status_code == 404
