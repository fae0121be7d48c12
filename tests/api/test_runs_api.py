"""Spec §5 runs API: create, list, get, events, approve/reject, cancel, retry, reconcile.

Tests run inside a transaction (``db``), so the dispatch a run schedules with
``transaction.on_commit`` only happens where a test asks for it with
``django_capture_on_commit_callbacks(execute=True)``; everywhere else the run
stays as the request left it and nothing is executed.
"""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from execution import reconciler
from execution.models import Run, RunEvent
from tests.api.helpers import add_events, error_code, make_run
from tests.conftest import client_for
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

RUNS_URL = "/api/execution/runs"

RUN_FIELDS = {
    # spec §5, exactly
    "id",
    "projectId",
    "featureId",
    "providerId",
    "providerRunId",
    "providerUrl",
    "providerStatusRaw",
    "status",
    "syncStatus",
    "lastReconciledAt",
    "nextReconcileAt",
    "lastSyncError",
    "fallbackFromProviderId",
    "command",
    "cwd",
    "envProfile",
    "policyVerdict",
    "riskLevel",
    "reasonCodes",
    "requiresApproval",
    "approvedBy",
    "approvedAt",
    "exitCode",
    "retryOfRunId",
    "createdAt",
    "startedAt",
    "endedAt",
    # and more
    "statusReason",
    "recommendationRuleId",
    "reconcileAttempts",
    "degraded",
    # run kinds and follow-ups
    "kind",
    "prompt",
    "followUpOfRunId",
    "cancelConfirmed",
    "cancelError",
}


def run_url(run_id: int, action: str = "") -> str:
    return f"{RUNS_URL}/{run_id}" + (f"/{action}" if action else "")


def event_types(run_id: int) -> list[str]:
    return list(
        RunEvent.objects.filter(run_id=run_id)
        .order_by("sequence_no")
        .values_list("event_type", flat=True)
    )


def create(client, project, command: str, **extra):
    return client.post(RUNS_URL, {"projectId": project.pk, "command": command, **extra}, "json")


# --- create --------------------------------------------------------------------


def test_operator_creates_a_queued_run_and_its_dispatch_is_scheduled(
    project, operator_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = create(operator_client, project, "echo hi")

    assert response.status_code == 201
    body = response.json()
    assert set(body) == RUN_FIELDS
    assert body["status"] == "queued"
    assert body["projectId"] == project.pk
    assert body["providerId"] == "local"
    assert body["policyVerdict"] == "allow"
    assert body["requiresApproval"] is False
    assert body["degraded"] is False
    assert Run.objects.get(pk=body["id"]).status == "queued"
    assert event_types(body["id"]) == ["run_created"]
    assert len(callbacks) == 1  # the dispatch, sent once the request commits


def test_created_run_executes_once_the_request_commits(
    project, operator_client, django_capture_on_commit_callbacks
):
    # Q_CLUSTER sync=True in tests: the committed dispatch and the local run happen inline.
    with django_capture_on_commit_callbacks(execute=True):
        response = create(operator_client, project, "echo hi")

    assert response.status_code == 201
    assert response.json()["status"] == "queued"
    run = Run.objects.get(pk=response.json()["id"])
    assert run.status == "succeeded"
    assert run.exit_code == 0
    stdout = "".join(
        RunEvent.objects.filter(run=run, stream="stdout").values_list("text", flat=True)
    )
    assert stdout == "hi\n"


def test_create_stores_the_optional_fields(project, operator_client):
    response = create(
        operator_client,
        project,
        "echo hi",
        providerId="local",
        featureId="feat-7",
        recommendationRuleId="rule-3",
        envProfile="default",
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["featureId"], body["recommendationRuleId"], body["envProfile"]) == (
        "feat-7",
        "rule-3",
        "default",
    )


def test_destructive_command_is_blocked_and_nothing_runs(
    project, operator_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = create(operator_client, project, "rm -rf /")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "blocked"
    assert body["policyVerdict"] == "deny"
    assert "destructive_command" in body["reasonCodes"]
    assert body["endedAt"] is not None
    assert callbacks == []
    assert not RunEvent.objects.filter(run_id=body["id"], event_type="output").exists()
    assert "policy_denied" in event_types(body["id"])


def test_network_command_awaits_approval_and_is_not_dispatched(
    project, operator_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = create(operator_client, project, "curl https://example.com")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "awaiting_approval"
    assert body["requiresApproval"] is True
    assert "network_command" in body["reasonCodes"]
    assert callbacks == []


def test_cwd_outside_the_workspace_is_blocked(project, operator_client, tmp_path):
    response = create(operator_client, project, "ls", cwd=str(tmp_path))

    assert response.status_code == 201
    assert response.json()["status"] == "blocked"
    assert "cwd_outside_workspace" in response.json()["reasonCodes"]


def test_unknown_env_profile_is_blocked(project, operator_client):
    response = create(operator_client, project, "ls", envProfile="no-such-profile")

    assert response.status_code == 201
    assert response.json()["status"] == "blocked"
    assert "env_profile_unknown" in response.json()["reasonCodes"]


def test_viewer_cannot_create_runs(project, viewer_client):
    response = create(viewer_client, project, "echo hi")

    assert response.status_code == 403
    assert error_code(response) == "permission_denied"
    assert not Run.objects.exists()


def test_create_without_command_is_a_camelcase_field_error(project, operator_client):
    response = operator_client.post(RUNS_URL, {"projectId": project.pk}, format="json")

    assert response.status_code == 400
    assert error_code(response) == "invalid"
    assert set(response.json()["error"]["fields"]) == {"command"}


def test_create_with_unknown_provider_is_400_on_provider_id(project, operator_client):
    response = create(operator_client, project, "echo hi", providerId="nope")

    assert response.status_code == 400
    assert "providerId" in response.json()["error"]["fields"]
    assert not Run.objects.exists()


def test_create_for_an_unknown_project_is_404(db, operator_client):
    response = operator_client.post(
        RUNS_URL, {"projectId": 999_999, "command": "echo hi"}, format="json"
    )

    assert response.status_code == 404


def test_same_idempotency_key_returns_the_same_run(project, operator_client):
    first = create(operator_client, project, "echo hi", idempotencyKey="launch-1")
    second = create(operator_client, project, "echo hi", idempotencyKey="launch-1")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert Run.objects.count() == 1


def test_idempotency_key_reused_for_another_command_is_a_conflict(project, operator_client):
    create(operator_client, project, "echo hi", idempotencyKey="launch-1")

    response = create(operator_client, project, "echo bye", idempotencyKey="launch-1")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert Run.objects.count() == 1


# --- list and get ----------------------------------------------------------------


def test_list_is_newest_first_and_paginated_with_count(project, viewer_client):
    runs = [make_run(project) for _ in range(3)]

    response = viewer_client.get(RUNS_URL, {"limit": 2})

    assert response.status_code == 200
    page = response.json()
    assert page["count"] == 3
    assert [r["id"] for r in page["results"]] == [runs[2].pk, runs[1].pk]
    assert page["next"] is not None
    rest = viewer_client.get(RUNS_URL, {"limit": 2, "offset": 2}).json()
    assert [r["id"] for r in rest["results"]] == [runs[0].pk]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"featureId": "f1"}, {"f1-queued"}),
        ({"providerId": "github_actions"}, {"gh-running-stale"}),
        ({"status": "running"}, {"gh-running-stale"}),
        ({"status": ["running", "failed"]}, {"gh-running-stale", "failed"}),
        ({"syncStatus": "stale"}, {"gh-running-stale"}),
    ],
)
def test_list_filters(project, viewer_client, query, expected):
    make_run(project, command="f1-queued", feature_id="f1")
    make_run(
        project,
        command="gh-running-stale",
        provider_id="github_actions",
        status="running",
        sync_status="stale",
    )
    make_run(project, command="failed", status="failed")

    response = viewer_client.get(RUNS_URL, query)

    assert response.status_code == 200
    assert {r["command"] for r in response.json()["results"]} == expected


def test_list_filters_by_project(project, viewer, other_project, tmp_path):
    second = ProjectFactory(workspace_root=str(tmp_path))
    MembershipFactory(project=second, user=viewer, role="viewer")
    mine = make_run(project)
    make_run(second)

    response = client_for(viewer).get(RUNS_URL, {"projectId": project.pk})

    assert [r["id"] for r in response.json()["results"]] == [mine.pk]


def test_list_with_an_unknown_status_is_400(project, viewer_client):
    response = viewer_client.get(RUNS_URL, {"status": "exploded"})

    assert response.status_code == 400
    assert "status" in response.json()["error"]["fields"]


def test_list_does_not_query_per_run(
    project, viewer_client, approver, django_assert_max_num_queries
):
    for _ in range(20):
        make_run(project, approved_by=approver, approved_at=timezone.now())

    with django_assert_max_num_queries(3):  # my projects, count, one page
        response = viewer_client.get(RUNS_URL)

    assert response.json()["count"] == 20
    assert response.json()["results"][0]["approvedBy"] == approver.username


def test_detail_is_one_query(project, viewer_client, approver, django_assert_num_queries):
    run = make_run(project, approved_by=approver, approved_at=timezone.now())

    with django_assert_num_queries(1):
        response = viewer_client.get(run_url(run.pk))

    assert response.status_code == 200
    assert response.json()["approvedBy"] == approver.username


def test_detail_marks_an_active_run_out_of_sync_as_degraded(project, viewer_client):
    stale = make_run(project, status="running", sync_status="stale", last_sync_error="timeout")
    finished = make_run(project, status="failed", sync_status="error")

    assert viewer_client.get(run_url(stale.pk)).json()["degraded"] is True
    assert viewer_client.get(run_url(finished.pk)).json()["degraded"] is False


# --- events --------------------------------------------------------------------


def test_events_page_after_a_sequence(project, viewer_client):
    run = make_run(project)
    add_events(run, 5)

    response = viewer_client.get(run_url(run.pk, "events"), {"afterSequence": 2, "limit": 2})

    assert response.status_code == 200
    page = response.json()
    assert [e["sequenceNo"] for e in page["items"]] == [3, 4]
    assert page["nextSequence"] == 4
    assert set(page["items"][0]) == {
        "sequenceNo",
        "stream",
        "eventType",
        "text",
        "payload",
        "occurredAt",
        "actor",
    }
    assert page["items"][0]["text"] == "line 3\n"
    assert page["items"][0]["stream"] == "stdout"


def test_polling_with_next_sequence_returns_only_new_events(project, viewer_client):
    run = make_run(project)
    add_events(run, 3)
    first = viewer_client.get(run_url(run.pk, "events")).json()

    empty = viewer_client.get(run_url(run.pk, "events"), {"afterSequence": first["nextSequence"]})
    add_events(run, 2)
    later = viewer_client.get(run_url(run.pk, "events"), {"afterSequence": first["nextSequence"]})

    assert first["nextSequence"] == 3
    assert empty.json() == {"items": [], "nextSequence": 3}
    assert [e["sequenceNo"] for e in later.json()["items"]] == [4, 5]


def test_events_limit_defaults_to_200_and_is_capped_at_1000(project, viewer_client):
    run = make_run(project)
    add_events(run, 1005)

    default = viewer_client.get(run_url(run.pk, "events")).json()
    capped = viewer_client.get(run_url(run.pk, "events"), {"limit": 5000}).json()

    assert len(default["items"]) == 200
    assert len(capped["items"]) == 1000
    assert capped["nextSequence"] == 1000


@pytest.mark.parametrize("query", [{"afterSequence": -1}, {"limit": 0}, {"limit": "many"}])
def test_events_with_bad_paging_is_400(project, viewer_client, query):
    run = make_run(project)

    response = viewer_client.get(run_url(run.pk, "events"), query)

    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == set(query)


# --- approve / reject ----------------------------------------------------------


def awaiting(project) -> Run:
    return make_run(
        project,
        command="curl https://example.com",
        status="awaiting_approval",
        policy_verdict="requires_approval",
        requires_approval=True,
        reason_codes=["network_command"],
    )


def test_operator_cannot_approve(project, operator_client):
    run = awaiting(project)

    response = operator_client.post(run_url(run.pk, "approve"))

    assert response.status_code == 403
    assert error_code(response) == "permission_denied"
    run.refresh_from_db()
    assert run.status == "awaiting_approval"


def test_approver_approves_a_run_awaiting_approval(
    project, approver, approver_client, django_capture_on_commit_callbacks
):
    run = awaiting(project)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = approver_client.post(run_url(run.pk, "approve"), {}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "queued"
    assert body["approvedBy"] == approver.username
    assert body["approvedAt"] is not None
    approved = RunEvent.objects.get(run=run, event_type="approved")
    assert approved.actor == approver.username
    assert len(callbacks) == 1  # dispatch once approved


def test_approve_records_the_comment(project, approver_client):
    run = awaiting(project)

    approver_client.post(run_url(run.pk, "approve"), {"comment": "ok for the demo"}, "json")

    assert RunEvent.objects.get(run=run, event_type="approval_comment").text == "ok for the demo"


def test_approve_with_decision_reject_rejects(project, approver_client):
    run = awaiting(project)

    response = approver_client.post(
        run_url(run.pk, "approve"), {"decision": "reject", "comment": "no network"}, "json"
    )

    assert response.status_code == 200
    assert response.json()["status"] == "blocked"
    assert "rejected" in event_types(run.pk)


def test_reject_blocks_the_run(project, approver, approver_client):
    run = awaiting(project)

    response = approver_client.post(run_url(run.pk, "reject"), {"comment": "no"}, "json")

    assert response.status_code == 200
    assert response.json()["status"] == "blocked"
    assert response.json()["statusReason"] == "approval_rejected"
    rejected = RunEvent.objects.get(run=run, event_type="rejected")
    assert rejected.actor == approver.username


def test_operator_cannot_reject(project, operator_client):
    run = awaiting(project)

    assert operator_client.post(run_url(run.pk, "reject")).status_code == 403


def test_approving_a_queued_run_is_409(project, approver_client):
    run = make_run(project, status="queued")

    response = approver_client.post(run_url(run.pk, "approve"))

    assert response.status_code == 409
    assert error_code(response) == "invalid_state"


def test_approve_with_an_unknown_decision_is_400(project, approver_client):
    run = awaiting(project)

    response = approver_client.post(run_url(run.pk, "approve"), {"decision": "maybe"}, "json")

    assert response.status_code == 400
    assert "decision" in response.json()["error"]["fields"]


# --- cancel / retry ------------------------------------------------------------


def test_cancel_a_queued_local_run_ends_it_canceled(project, operator, operator_client):
    run = make_run(project, status="queued")

    response = operator_client.post(run_url(run.pk, "cancel"))

    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    assert RunEvent.objects.get(run=run, event_type="cancel_requested").actor == operator.username


def test_cancel_a_finished_run_is_409(project, operator_client):
    run = make_run(project, status="succeeded")

    response = operator_client.post(run_url(run.pk, "cancel"))

    assert response.status_code == 409
    assert error_code(response) == "invalid_state"


def test_viewer_cannot_cancel(project, viewer_client):
    run = make_run(project, status="queued")

    assert viewer_client.post(run_url(run.pk, "cancel")).status_code == 403
    run.refresh_from_db()
    assert run.status == "queued"


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_retry_creates_a_new_run_linked_to_the_old_one(project, operator_client, status):
    old = make_run(project, status=status, command="echo again", feature_id="f9")

    response = operator_client.post(run_url(old.pk, "retry"))

    assert response.status_code == 201
    body = response.json()
    assert body["id"] != old.pk
    assert body["retryOfRunId"] == old.pk
    assert body["command"] == "echo again"
    assert body["featureId"] == "f9"
    assert body["status"] == "queued"
    assert "retried" in event_types(old.pk)


def test_retry_of_a_succeeded_run_is_409(project, operator_client):
    run = make_run(project, status="succeeded")

    response = operator_client.post(run_url(run.pk, "retry"))

    assert response.status_code == 409
    assert Run.objects.count() == 1


# --- reconcile -----------------------------------------------------------------


def test_operator_reconciles_a_run(project, operator, operator_client, monkeypatch):
    run = make_run(project, status="running", provider_id="github_actions")
    calls = []

    def fake_reconcile(run_id, *, actor="system"):
        calls.append((run_id, actor))
        Run.objects.filter(pk=run_id).update(sync_status="in_sync", reconcile_attempts=1)
        return Run.objects.get(pk=run_id)

    monkeypatch.setattr(reconciler, "reconcile_run", fake_reconcile)

    response = operator_client.post(run_url(run.pk, "reconcile"))

    assert response.status_code == 200
    assert response.json()["reconcileAttempts"] == 1
    assert calls == [(run.pk, operator.username)]


def test_viewer_cannot_reconcile(project, viewer_client, monkeypatch):
    run = make_run(project, status="running")
    monkeypatch.setattr(reconciler, "reconcile_run", pytest.fail)

    response = viewer_client.post(run_url(run.pk, "reconcile"))

    assert response.status_code == 403


# --- token auth end to end ----------------------------------------------------------


def test_a_token_user_launches_a_run(project):
    user = UserFactory(username="token-user")
    MembershipFactory(project=project, user=user, role="operator")
    client = APIClient()
    token = client.post(
        "/api/auth/token/", {"username": "token-user", "password": "pw-for-tests"}, "json"
    ).json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")

    response = create(client, project, "echo hi")

    assert response.status_code == 201
    assert Run.objects.get(pk=response.json()["id"]).created_by == user
