"""Four eyes: the creator of a run does not approve it, unless the project
allows self-approval. Rejecting one's own run stays possible (it only stops it)."""

from __future__ import annotations

import pytest

from execution.models import Run, RunEvent
from tests.api.helpers import error_code
from tests.conftest import client_for
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

RUNS_URL = "/api/execution/runs"


def created_by_api(client, project) -> Run:
    """A run that needs approval, created through the API by ``client``'s user."""
    response = client.post(
        RUNS_URL, {"projectId": project.pk, "command": "curl https://example.com"}, "json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "awaiting_approval"
    return Run.objects.get(pk=response.json()["id"])


@pytest.fixture
def second_approver(project):
    user = UserFactory(username="second-approver")
    MembershipFactory(project=project, user=user, role="approver")
    return user


def test_creator_cannot_approve_their_own_run(project, approver, approver_client):
    run = created_by_api(approver_client, project)

    response = approver_client.post(f"{RUNS_URL}/{run.pk}/approve", {}, "json")

    assert response.status_code == 403
    assert error_code(response) == "self_approval"
    run.refresh_from_db()
    assert run.status == "awaiting_approval"
    assert run.approved_by is None
    assert not RunEvent.objects.filter(run=run, event_type="approved").exists()


def test_project_admin_who_created_the_run_cannot_approve_it_either(project, admin_client):
    run = created_by_api(admin_client, project)

    response = admin_client.post(f"{RUNS_URL}/{run.pk}/approve")

    assert response.status_code == 403
    assert error_code(response) == "self_approval"


def test_another_approver_approves_it(project, approver_client, second_approver):
    run = created_by_api(approver_client, project)

    response = client_for(second_approver).post(f"{RUNS_URL}/{run.pk}/approve", {}, "json")

    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert response.json()["approvedBy"] == "second-approver"


def test_allow_self_approval_lets_the_creator_approve(project, approver, approver_client):
    project.allow_self_approval = True
    project.save()
    run = created_by_api(approver_client, project)

    response = approver_client.post(f"{RUNS_URL}/{run.pk}/approve", {}, "json")

    assert response.status_code == 200
    assert response.json()["approvedBy"] == approver.username


@pytest.mark.parametrize(("path", "body"), [("reject", {}), ("approve", {"decision": "reject"})])
def test_creator_may_reject_their_own_run(project, approver_client, path, body):
    run = created_by_api(approver_client, project)

    response = approver_client.post(f"{RUNS_URL}/{run.pk}/{path}", body, "json")

    assert response.status_code == 200
    assert response.json()["status"] == "blocked"


def test_the_retrier_of_a_run_is_its_creator(project, approver_client, second_approver):
    # A retry is a new run created by whoever retried it: they cannot approve it.
    first = created_by_api(approver_client, project)
    client_for(second_approver).post(f"{RUNS_URL}/{first.pk}/reject", {}, "json")
    Run.objects.filter(pk=first.pk).update(status="failed")

    retried = client_for(second_approver).post(f"{RUNS_URL}/{first.pk}/retry")
    assert retried.json()["status"] == "awaiting_approval"

    own = client_for(second_approver).post(f"{RUNS_URL}/{retried.json()['id']}/approve")
    assert own.status_code == 403
    other = approver_client.post(f"{RUNS_URL}/{retried.json()['id']}/approve")
    assert other.status_code == 200


def test_a_project_admin_turns_self_approval_on_with_patch(project, admin_client, approver_client):
    run = created_by_api(approver_client, project)
    assert approver_client.post(f"{RUNS_URL}/{run.pk}/approve").status_code == 403

    patched = admin_client.patch(
        f"/api/projects/{project.pk}/", {"allowSelfApproval": True}, format="json"
    )

    assert patched.status_code == 200
    assert patched.json()["allowSelfApproval"] is True
    assert approver_client.post(f"{RUNS_URL}/{run.pk}/approve").status_code == 200
