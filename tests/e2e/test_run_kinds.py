"""Run kinds through the API against the provider simulators: prompts get the
prompt policy, a prompt never falls back to the local shell, waiting agent
runs take messages and finished ones take follow-ups.

Dispatch tasks run inline when the request commits; only reconcile sweeps
move runs afterwards.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from execution.models import Run, RunEvent
from execution.reconcile import cadence
from execution.reconciler import reconcile_sweep
from tests.conftest import client_for

pytestmark = pytest.mark.django_db

RUNS = "/api/execution/runs"
PROVIDERS = "/api/execution/providers"
PROJECTS = "/api/projects"
HELD = "[sim:hold]"


@pytest.fixture
def admin_api(admin_member):
    return client_for(admin_member)


@pytest.fixture
def operator_api(operator):
    return client_for(operator)


def configure(admin_api, project, provider_id: str, sim) -> None:
    """Enable ``provider_id`` on the project, pointed at its simulator, via the API."""
    config = admin_api.put(
        f"{PROVIDERS}/{provider_id}/config",
        {
            "projectId": project.pk,
            "enabled": True,
            "settings": {**sim.demo_settings, "baseUrl": sim.url},
        },
        format="json",
    )
    assert config.status_code == 200, config.content
    credentials = admin_api.post(
        f"{PROVIDERS}/{provider_id}/credentials",
        {"projectId": project.pk, "credentials": sim.demo_credentials()},
        format="json",
    )
    assert credentials.status_code in (200, 201), credentials.content


def revoke(admin_api, project, provider_id: str, sim) -> None:
    """The provider now rejects the key, and the health check has seen it."""
    sim.revoke_tokens()
    check = admin_api.post(
        f"{PROVIDERS}/{provider_id}/check", {"projectId": project.pk}, format="json"
    )
    assert check.status_code == 200, check.content
    assert check.json()["status"] == "failing"


def post_run(api, project, capture, **body) -> dict:
    with capture(execute=True):
        response = api.post(RUNS, {"projectId": project.pk, **body}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def stored(run_id: int) -> Run:
    return Run.objects.get(pk=run_id)


def sweep(run_id: int) -> Run:
    """Move on to the run's next poll (its slot's next listing, for a
    batch-polled run) and sweep once."""
    cadence.listings.clear()
    Run.objects.filter(pk=run_id).update(next_reconcile_at=timezone.now() - timedelta(seconds=1))
    reconcile_sweep()
    return stored(run_id)


def events(run_id: int, event_type: str) -> list[RunEvent]:
    return list(RunEvent.objects.filter(run_id=run_id, event_type=event_type))


@pytest.fixture
def no_local_process(monkeypatch):
    """Records every local execution: the task body and the process runner."""
    calls: list[str] = []
    from execution import local_runtime

    monkeypatch.setattr(local_runtime, "execute_run", lambda run_id: calls.append("task"))
    monkeypatch.setattr(local_runtime, "run_process", lambda *a, **k: calls.append("process"))
    return calls


# --- the prompt policy by default ------------------------------------------------------


@pytest.mark.parametrize("provider_id", ["cursor", "devin"])
def test_a_plain_prompt_is_dispatched_without_approval_on_a_default_project(
    provider_id, project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for(provider_id)
    configure(admin_api, project, provider_id, sim)

    body = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId=provider_id,
        prompt="Add a README section on setup; then update the changelog",
    )

    assert body["kind"] == "prompt"
    assert body["prompt"] == "Add a README section on setup; then update the changelog"
    assert body["command"] == ""
    assert body["policyVerdict"] == "allow"
    assert body["riskLevel"] == "medium"
    assert body["reasonCodes"] == ["agent_prompt"]
    run = stored(body["id"])
    assert run.provider_run_id
    assert sim.stats()["creations"] == 1


@pytest.mark.parametrize("provider_id", ["cursor", "devin"])
def test_with_agent_runs_require_approval_a_prompt_waits_for_an_approver(
    provider_id, project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for(provider_id)
    configure(admin_api, project, provider_id, sim)
    patched = admin_api.patch(
        f"{PROJECTS}/{project.pk}/", {"agentRunsRequireApproval": True}, format="json"
    )
    assert patched.status_code == 200, patched.content

    body = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId=provider_id,
        prompt="Add a README section on setup",
    )

    assert body["status"] == "awaiting_approval"
    assert body["policyVerdict"] == "requires_approval"
    assert stored(body["id"]).provider_run_id == ""
    assert sim.stats()["creations"] == 0


def test_a_command_sent_as_command_to_a_prompt_provider_is_taken_as_its_prompt(
    project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("cursor")
    configure(admin_api, project, "cursor", sim)

    body = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId="cursor",
        command="Update the changelog",
    )

    assert body["kind"] == "prompt"
    assert body["prompt"] == "Update the changelog"
    assert body["reasonCodes"] == ["agent_prompt"]
    assert sim.find_run(stored(body["id"]).provider_run_id).prompt == "Update the changelog"


# --- fallback keeps the kind -----------------------------------------------------------------


def test_a_devin_prompt_with_a_revoked_key_never_reaches_the_local_shell(
    project, admin_api, operator_api, sim_for, no_local_process, django_capture_on_commit_callbacks
):
    sim = sim_for("devin")
    configure(admin_api, project, "devin", sim)
    revoke(admin_api, project, "devin", sim)
    assert project.allow_fallback_to_local is True

    body = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId="devin",
        prompt="Update the changelog",
    )

    run = stored(body["id"])
    assert no_local_process == []
    assert run.status == "failed"
    assert run.status_reason == "provider_unavailable"
    assert run.provider_id == "devin"
    assert run.fallback_from_provider_id == ""
    assert not events(run.pk, "fallback_to_local")
    (unavailable,) = events(run.pk, "provider_unavailable")
    assert unavailable.payload["reason"] == "provider_unhealthy"
    assert "API key rejected by Devin" in unavailable.text
    (failed,) = [e for e in events(run.pk, "status_changed") if e.payload.get("to") == "failed"]
    assert "API key rejected by Devin" in failed.text


def test_a_github_actions_command_with_a_revoked_key_still_falls_back_to_local(
    project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("github_actions")
    configure(admin_api, project, "github_actions", sim)
    revoke(admin_api, project, "github_actions", sim)

    body = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId="github_actions",
        command="echo from-local",
    )

    run = stored(body["id"])
    assert run.provider_id == "local"
    assert run.fallback_from_provider_id == "github_actions"
    assert run.status == "succeeded"  # django-q2 runs the local task inline in tests
    assert "from-local" in "".join(
        e.text for e in RunEvent.objects.filter(run=run, stream="stdout")
    )


def test_a_prompt_goes_to_the_configured_agent_fallback_with_its_approval(
    project,
    admin_api,
    operator_api,
    approver,
    sim_for,
    no_local_process,
    django_capture_on_commit_callbacks,
):
    devin, cursor = sim_for("devin"), sim_for("cursor")
    configure(admin_api, project, "devin", devin)
    configure(admin_api, project, "cursor", cursor)
    patched = admin_api.patch(
        f"{PROJECTS}/{project.pk}/",
        {"agentFallbackChain": ["cursor"], "agentRunsRequireApproval": True},
        format="json",
    )
    assert patched.status_code == 200, patched.content
    body = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId="devin",
        prompt="Update the changelog",
    )
    assert body["status"] == "awaiting_approval"
    revoke(admin_api, project, "devin", devin)

    with django_capture_on_commit_callbacks(execute=True):
        approved = client_for(approver).post(f"{RUNS}/{body['id']}/approve", format="json")
    assert approved.status_code == 200, approved.content

    run = stored(body["id"])
    assert no_local_process == []
    assert run.provider_id == "cursor"
    assert run.fallback_from_provider_id == "devin"
    assert run.provider_run_id.startswith("run-")
    assert cursor.stats()["creations"] == 1
    (fallback,) = events(run.pk, "fallback_to_provider")
    assert fallback.payload["toProviderId"] == "cursor"
    assert fallback.payload["reason"] == "provider_unhealthy"
    assert fallback.payload["approvalCarriedOver"] is True
    assert fallback.payload["approvedBy"] == approver.username
    assert "carries over" in fallback.text


def test_an_unavailable_agent_fallback_fails_the_run_naming_both(
    project, admin_api, operator_api, sim_for, no_local_process, django_capture_on_commit_callbacks
):
    devin = sim_for("devin")
    configure(admin_api, project, "devin", devin)
    admin_api.patch(f"{PROJECTS}/{project.pk}/", {"agentFallbackChain": ["cursor"]}, format="json")
    revoke(admin_api, project, "devin", devin)  # cursor: never enabled

    body = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId="devin",
        prompt="Update the changelog",
    )

    run = stored(body["id"])
    assert no_local_process == []
    assert run.status_reason == "provider_unavailable"
    assert (
        "Cursor Cloud Agents is not enabled"
        in run.events.get(event_type="provider_unavailable").text
    )


# --- messages to a waiting run ---------------------------------------------------------------


def test_a_waiting_devin_run_takes_a_message_and_runs_again_after_the_next_poll(
    project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("devin")
    configure(admin_api, project, "devin", sim)
    body = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId="devin",
        prompt=f"Migrate the settings {HELD}",
    )
    session_id = stored(body["id"]).provider_run_id
    sim.set_state(session_id, "blocked")
    assert sweep(body["id"]).status == "waiting"

    answered = operator_api.post(
        f"{RUNS}/{body['id']}/messages", {"text": "Use PostgreSQL 16."}, format="json"
    )

    assert answered.status_code == 200, answered.content
    assert answered.json()["status"] == "waiting"  # until the next poll
    (sent,) = [r for r in sim.request_log() if r["kind"] == "send_message"]
    assert (sent["method"], sent["path"]) == ("POST", f"/v1/sessions/{session_id}/message")
    assert [text for _, text in sim.find_run(session_id).user_messages] == ["Use PostgreSQL 16."]
    run = sweep(body["id"])
    assert run.status == "running"
    (audit,) = events(run.pk, "message_sent")
    assert audit.actor == f"operator-{project.pk}"
    assert "Use PostgreSQL 16." in [e.text for e in RunEvent.objects.filter(run=run)]


def test_a_message_to_a_run_that_is_not_waiting_is_refused(
    project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("devin")
    configure(admin_api, project, "devin", sim)
    body = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId="devin",
        prompt=f"Migrate the settings {HELD}",
    )

    answered = operator_api.post(f"{RUNS}/{body['id']}/messages", {"text": "Go on"}, format="json")

    assert answered.status_code == 409
    assert answered.json()["error"]["code"] == "invalid_state"
    assert not [r for r in sim.request_log() if r["kind"] == "send_message"]


def test_a_message_needs_operator_role(project, viewer, sim_for):
    run = Run.objects.create(
        project=project,
        kind="prompt",
        prompt="x",
        provider_id="devin",
        status="waiting",
        provider_run_id="devin-1",
        policy_verdict="allow",
        risk_level="medium",
    )
    answered = client_for(viewer).post(f"{RUNS}/{run.pk}/messages", {"text": "Go"}, format="json")
    assert answered.status_code == 403


# --- follow-ups on finished runs ----------------------------------------------------------------


def finished_cursor_run(project, admin_api, operator_api, sim, capture) -> dict:
    configure(admin_api, project, "cursor", sim)
    body = post_run(
        operator_api, project, capture, providerId="cursor", prompt=f"Add a setup section {HELD}"
    )
    sim.set_state(stored(body["id"]).provider_run_id, "FINISHED")
    assert sweep(body["id"]).status == "succeeded"
    return body


def test_a_follow_up_on_a_finished_cursor_run_creates_one_linked_run_on_the_same_agent(
    project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("cursor")
    first = finished_cursor_run(
        project, admin_api, operator_api, sim, django_capture_on_commit_callbacks
    )
    agent_id = stored(first["id"]).provider_state["agentId"]

    with django_capture_on_commit_callbacks(execute=True):
        response = operator_api.post(
            f"{RUNS}/{first['id']}/follow-up", {"prompt": "Also add a FAQ"}, format="json"
        )

    assert response.status_code == 201, response.content
    follow_up = response.json()
    assert follow_up["followUpOfRunId"] == first["id"]
    assert follow_up["kind"] == "prompt"
    assert follow_up["prompt"] == "Also add a FAQ"
    assert follow_up["providerId"] == "cursor"
    new = stored(follow_up["id"])
    assert new.provider_state["agentId"] == agent_id
    assert new.provider_run_id != stored(first["id"]).provider_run_id
    assert stored(first["id"]).status == "succeeded"
    routes = [r["kind"] for r in sim.request_log()]
    assert routes.count("create_agent") == 1
    assert routes.count("create_run") == 1
    assert sim.stats()["creations"] == 2  # the agent with its first run, then one more run
    (created_run,) = [r for r in sim.request_log() if r["kind"] == "create_run"]
    assert created_run["path"] == f"/v1/agents/{agent_id}/runs"
    assert sim.find_run(new.provider_run_id).prompt == "Also add a FAQ"
    assert Run.objects.filter(project=project).count() == 2
    assert sweep(new.pk).provider_status_raw in ("CREATING", "RUNNING", "FINISHED")


def test_a_follow_up_while_the_agent_is_busy_is_a_409_and_records_nothing(
    project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("cursor")
    first = finished_cursor_run(
        project, admin_api, operator_api, sim, django_capture_on_commit_callbacks
    )
    # Someone started another run on the agent from Cursor's own UI.
    agent_id = stored(first["id"]).provider_state["agentId"]
    busy = sim.find_run(sim._agents[agent_id].run_ids[-1])
    sim.set_state(busy.id, "RUNNING")

    response = operator_api.post(
        f"{RUNS}/{first['id']}/follow-up", {"prompt": "Also add a FAQ"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "agent_busy"
    assert Run.objects.filter(project=project).count() == 1
    assert events(first["id"], "follow_up_refused")


def test_a_follow_up_on_a_running_run_is_refused(
    project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("cursor")
    configure(admin_api, project, "cursor", sim)
    body = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId="cursor",
        prompt=f"Work {HELD}",
    )

    response = operator_api.post(
        f"{RUNS}/{body['id']}/follow-up", {"prompt": "More"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "invalid_state"


def test_a_follow_up_on_a_finished_devin_session_messages_the_same_session(
    project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("devin")
    configure(admin_api, project, "devin", sim)
    first = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId="devin",
        prompt=f"Fix the build {HELD}",
    )
    session_id = stored(first["id"]).provider_run_id
    sim.set_state(session_id, "finished")
    assert sweep(first["id"]).status == "succeeded"

    response = operator_api.post(
        f"{RUNS}/{first['id']}/follow-up", {"prompt": "Now bump the version"}, format="json"
    )

    assert response.status_code == 201, response.content
    new = stored(response.json()["id"])
    assert new.provider_run_id == session_id
    assert sim.stats()["creations"] == 1  # no second session
    assert sweep(new.pk).status == "running"
    assert stored(first["id"]).status == "succeeded"
    # The follow-up's log continues the session's transcript, without repeating it.
    texts = [e.text for e in RunEvent.objects.filter(run_id=new.pk, event_type="output")]
    assert "Now bump the version\n" in texts  # entries keep their line ending
    assert not any("Fix the build" in text for text in texts)


def test_a_follow_up_on_an_ended_devin_session_is_a_409_with_the_reason(
    project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("devin")
    configure(admin_api, project, "devin", sim)
    first = post_run(
        operator_api,
        project,
        django_capture_on_commit_callbacks,
        providerId="devin",
        prompt=f"Fix the build {HELD}",
    )
    sim.set_state(stored(first["id"]).provider_run_id, "expired")
    assert sweep(first["id"]).status == "failed"

    response = operator_api.post(
        f"{RUNS}/{first['id']}/follow-up", {"prompt": "Try again"}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "session_ended"
    assert "ended" in response.json()["error"]["message"]
    assert Run.objects.filter(project=project).count() == 1


def test_a_follow_up_that_needs_approval_waits_and_is_sent_once_approved(
    project, admin_api, operator_api, approver, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("cursor")
    first = finished_cursor_run(
        project, admin_api, operator_api, sim, django_capture_on_commit_callbacks
    )
    admin_api.patch(
        f"{PROJECTS}/{project.pk}/",
        {"promptPatterns": [{"pattern": r"\bproduction\b", "reasonCode": "production"}]},
        format="json",
    )

    response = operator_api.post(
        f"{RUNS}/{first['id']}/follow-up", {"prompt": "Deploy to Production"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["status"] == "awaiting_approval"
    assert response.json()["reasonCodes"] == ["production"]
    assert not [r for r in sim.request_log() if r["kind"] == "create_run"]
    with django_capture_on_commit_callbacks(execute=True):
        approved = client_for(approver).post(f"{RUNS}/{response.json()['id']}/approve")
    assert approved.status_code == 200, approved.content
    new = stored(response.json()["id"])
    assert new.provider_run_id.startswith("run-")
    assert len([r for r in sim.request_log() if r["kind"] == "create_run"]) == 1


def test_a_follow_up_to_a_provider_without_follow_ups_is_refused(project, operator_api):
    run = Run.objects.create(
        project=project,
        command="echo hi",
        provider_id="local",
        status="succeeded",
        provider_run_id="local-1",
        policy_verdict="allow",
        risk_level="low",
    )
    response = operator_api.post(f"{RUNS}/{run.pk}/follow-up", {"prompt": "More"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "unsupported"


def test_a_failed_follow_up_is_retried_on_the_same_agent(
    project, admin_api, operator_api, approver, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for("cursor")
    first = finished_cursor_run(
        project, admin_api, operator_api, sim, django_capture_on_commit_callbacks
    )
    admin_api.patch(f"{PROJECTS}/{project.pk}/", {"agentRunsRequireApproval": True}, format="json")
    waiting = operator_api.post(
        f"{RUNS}/{first['id']}/follow-up", {"prompt": "Also add a FAQ"}, format="json"
    ).json()
    agent_id = stored(first["id"]).provider_state["agentId"]
    sim.set_state(sim._agents[agent_id].run_ids[-1], "RUNNING")  # busy when approved
    with django_capture_on_commit_callbacks(execute=True):
        client_for(approver).post(f"{RUNS}/{waiting['id']}/approve")
    assert (stored(waiting["id"]).status, stored(waiting["id"]).status_reason) == (
        "failed",
        "agent_busy",
    )
    sim.set_state(sim._agents[agent_id].run_ids[-1], "FINISHED")

    retried = operator_api.post(f"{RUNS}/{waiting['id']}/retry").json()
    assert retried["followUpOfRunId"] == first["id"]
    assert retried["status"] == "awaiting_approval"
    with django_capture_on_commit_callbacks(execute=True):
        client_for(approver).post(f"{RUNS}/{retried['id']}/approve")

    new = stored(retried["id"])
    assert new.provider_state["agentId"] == agent_id
    assert new.provider_run_id in sim._agents[agent_id].run_ids
    assert [r["kind"] for r in sim.request_log()].count("create_agent") == 1


def test_a_redelivered_follow_up_dispatch_is_never_sent_twice(
    project, admin_api, operator_api, sim_for, django_capture_on_commit_callbacks
):
    from execution.dispatch import dispatch_run

    sim = sim_for("cursor")
    first = finished_cursor_run(
        project, admin_api, operator_api, sim, django_capture_on_commit_callbacks
    )
    run = Run.objects.create(
        project=project,
        kind="prompt",
        prompt="Also add a FAQ",
        provider_id="cursor",
        follow_up_of_id=first["id"],
        policy_verdict="allow",
        risk_level="medium",
        dispatch_key="k",
        dispatch_attempts=1,  # an earlier delivery got as far as the provider call
    )

    assert dispatch_run(run.pk) == "failed"

    assert stored(run.pk).status_reason == "dispatch_unconfirmed"
    assert not [r for r in sim.request_log() if r["kind"] == "create_run"]
