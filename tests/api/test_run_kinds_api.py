"""Run kinds at the API: which field each provider takes, the prompt policy's
400s and verdicts, policy-check by provider, and what GET providers shows.

No provider is called here: prompt runs that would be dispatched are created
without running the on-commit dispatch.
"""

from __future__ import annotations

import pytest

from execution import services
from execution.dispatch import dispatch_run
from execution.local_runtime import execute_run
from execution.models import Run
from tests.api.helpers import error_code
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db

RUNS = "/api/execution/runs"
POLICY_CHECK = "/api/execution/policy-check"


def create(client, project, **body):
    return client.post(RUNS, {"projectId": project.pk, **body}, format="json")


def set_project(project, **fields) -> None:
    for name, value in fields.items():
        setattr(project, name, value)
    project.save()


# --- which field a provider takes -------------------------------------------------------


def test_a_prompt_to_the_local_executor_is_a_400_naming_prompt(operator_client, project):
    response = create(operator_client, project, providerId="local", prompt="Update the changelog")

    assert response.status_code == 400
    assert "prompt" in response.json()["error"]["fields"]
    assert Run.objects.count() == 0


def test_a_prompt_to_github_actions_is_a_400_naming_prompt(operator_client, project):
    response = create(operator_client, project, providerId="github_actions", prompt="Do it")

    assert response.status_code == 400
    assert "prompt" in response.json()["error"]["fields"]


def test_command_and_prompt_together_are_a_400_naming_prompt(operator_client, project):
    response = create(operator_client, project, providerId="cursor", command="ls", prompt="Do it")

    assert response.status_code == 400
    assert "prompt" in response.json()["error"]["fields"]


def test_a_command_provider_without_a_command_is_a_400_naming_command(operator_client, project):
    response = create(operator_client, project, providerId="local")

    assert response.status_code == 400
    assert "command" in response.json()["error"]["fields"]


def test_a_command_run_keeps_its_text_under_command(operator_client, project):
    response = create(operator_client, project, command="echo hi")

    assert response.status_code == 201
    body = response.json()
    assert (body["kind"], body["command"], body["prompt"]) == ("command", "echo hi", "")


# --- prompts the prompt policy refuses outright -------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "code"),
    [
        ("", "prompt_empty"),
        ("   \n\t ", "prompt_empty"),
        ("Update\x00 the changelog", "prompt_nul"),
        ("x" * 20_001, "prompt_too_long"),
    ],
    ids=["empty", "whitespace", "nul", "20001-chars"],
)
def test_a_prompt_the_policy_refuses_is_a_400_with_its_code(operator_client, project, prompt, code):
    response = create(operator_client, project, providerId="devin", prompt=prompt)

    assert response.status_code == 400
    assert error_code(response) == code
    assert "prompt" in response.json()["error"]["fields"]
    assert Run.objects.count() == 0


def test_a_prompt_of_exactly_the_maximum_length_is_taken(operator_client, project):
    response = create(operator_client, project, providerId="devin", prompt="x" * 20_000)

    assert response.status_code == 201
    assert len(response.json()["prompt"]) == 20_000


def test_the_project_maximum_length_applies(operator_client, project):
    set_project(project, max_prompt_length=100)

    response = create(operator_client, project, providerId="cursor", prompt="y" * 101)

    assert response.status_code == 400
    assert error_code(response) == "prompt_too_long"


# --- the prompt policy's verdicts ----------------------------------------------------------


def test_a_prompt_with_shell_syntax_is_allowed_not_judged_as_a_command(operator_client, project):
    response = create(
        operator_client,
        project,
        providerId="cursor",
        prompt="Add a README section on setup; then update the changelog",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "queued"
    assert body["policyVerdict"] == "allow"
    assert body["reasonCodes"] == ["agent_prompt"]


def test_a_prompt_matching_a_project_pattern_waits_with_that_patterns_code(
    operator_client, project
):
    set_project(
        project,
        prompt_patterns=[
            {"pattern": r"force[- ]push", "reasonCode": "force_push"},
            {"pattern": r"\bsecret", "reasonCode": "secret"},
        ],
    )

    response = create(
        operator_client, project, providerId="devin", prompt="Then FORCE PUSH to main"
    )

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "awaiting_approval"
    assert body["requiresApproval"] is True
    assert body["reasonCodes"] == ["force_push"]


def test_idempotency_key_reused_for_another_kind_is_refused(operator_client, project):
    first = create(operator_client, project, command="echo hi", idempotencyKey="k-1")
    assert first.status_code == 201

    again = create(
        operator_client, project, providerId="cursor", prompt="echo hi", idempotencyKey="k-1"
    )

    assert again.status_code == 409
    assert error_code(again) == "idempotency_key_reused"


def test_retry_of_a_prompt_run_is_a_prompt_run(operator, project):
    failed = RunFactory(
        project=project, provider_id="devin", command="Update the changelog", status="failed"
    )
    assert (failed.kind, failed.prompt) == ("prompt", "Update the changelog")

    new = services.retry(failed, operator)

    assert (new.kind, new.prompt, new.command) == ("prompt", "Update the changelog", "")
    assert new.reason_codes == ["agent_prompt"]


# --- policy-check by provider -------------------------------------------------------------


def test_policy_check_on_a_prompt_answers_with_the_prompt_policy(viewer_client, project):
    response = viewer_client.post(
        POLICY_CHECK,
        {"projectId": project.pk, "providerId": "devin", "prompt": "Add a section; then more"},
        format="json",
    )

    assert response.status_code == 200
    assert response.json() == {
        "kind": "prompt",
        "verdict": "allow",
        "riskLevel": "medium",
        "reasonCodes": ["agent_prompt"],
        "messages": response.json()["messages"],
        "requiresApproval": False,
    }


def test_policy_check_on_a_prompt_reports_the_matching_pattern(viewer_client, project):
    set_project(project, prompt_patterns=[{"pattern": "production", "reasonCode": "production"}])

    response = viewer_client.post(
        POLICY_CHECK,
        {"projectId": project.pk, "providerId": "cursor", "prompt": "Deploy to production"},
        format="json",
    )

    assert response.json()["verdict"] == "requires_approval"
    assert response.json()["reasonCodes"] == ["production"]


def test_policy_check_of_a_command_line_to_a_prompt_provider_uses_the_prompt_policy(
    viewer_client, project
):
    # Older clients send "command" to agents too: it is a prompt there.
    response = viewer_client.post(
        POLICY_CHECK,
        {"projectId": project.pk, "providerId": "cursor", "command": "Add a README section"},
        format="json",
    )

    assert response.json()["kind"] == "prompt"
    assert response.json()["reasonCodes"] == ["agent_prompt"]


def test_policy_check_refuses_a_prompt_to_a_command_provider(viewer_client, project):
    response = viewer_client.post(
        POLICY_CHECK, {"projectId": project.pk, "prompt": "Update the changelog"}, format="json"
    )

    assert response.status_code == 400
    assert "prompt" in response.json()["error"]["fields"]


def test_policy_check_refuses_a_too_long_prompt(viewer_client, project):
    response = viewer_client.post(
        POLICY_CHECK,
        {"projectId": project.pk, "providerId": "devin", "prompt": "z" * 20_001},
        format="json",
    )

    assert response.status_code == 400
    assert error_code(response) == "prompt_too_long"


# --- GET providers ---------------------------------------------------------------------------


def test_providers_show_their_input_kind_and_follow_up_capability(viewer_client, project):
    response = viewer_client.get("/api/execution/providers", {"projectId": project.pk})

    shown = {
        p["id"]: (p["inputKind"], p["capabilities"]["supportsFollowUp"]) for p in response.json()
    }
    assert shown == {
        "local": ("command", False),
        "github_actions": ("command", False),
        "cursor": ("prompt", True),
        "devin": ("prompt", True),
    }


# --- the last guards: prose never reaches a shell ------------------------------------------------


def test_dispatch_refuses_to_hand_a_prompt_run_to_the_local_executor(project, monkeypatch):
    started: list[int] = []
    monkeypatch.setattr(
        "connectors.providers.local.adapter.async_task", lambda *a, **k: started.append(1)
    )
    run = Run.objects.create(
        project=project,
        kind="prompt",
        prompt="Update the changelog",
        provider_id="local",
        policy_verdict="allow",
        risk_level="medium",
        dispatch_key="k",
    )

    assert dispatch_run(run.pk) == "failed"

    run.refresh_from_db()
    assert run.status_reason == "kind_mismatch"
    assert started == []


def test_the_local_runtime_refuses_a_prompt_run(project, monkeypatch):
    processes: list[int] = []
    monkeypatch.setattr("execution.local_runtime.run_process", lambda *a, **k: processes.append(1))
    run = Run.objects.create(
        project=project,
        kind="prompt",
        prompt="Update the changelog",
        provider_id="local",
        policy_verdict="allow",
        risk_level="medium",
    )

    assert execute_run(run.pk) == "failed"

    run.refresh_from_db()
    assert run.status_reason == "kind_mismatch"
    assert processes == []


def test_the_text_filter_finds_prompt_runs_by_their_prompt(viewer_client, project):
    RunFactory(project=project, provider_id="devin", command="Update the CHANGELOG")
    RunFactory(project=project, command="echo changelog")

    page = viewer_client.get(RUNS, {"projectId": project.pk, "q": "changelog"}).json()

    assert sorted(r["kind"] for r in page["results"]) == ["command", "prompt"]
