"""Spec §5 "Around them": the auth token, projects and their members."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from knox.models import AuthToken
from rest_framework.test import APIClient

from ccdash.models import AuditLog, Membership, Project
from tests.api.helpers import error_code
from tests.conftest import client_for
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/auth/token/"
PROJECTS_URL = "/api/projects/"


def members_url(project) -> str:
    return f"/api/projects/{project.pk}/members"


# --- token ---------------------------------------------------------------------


def test_token_for_valid_credentials_authenticates_later_requests(project):
    user = UserFactory(username="alice")
    MembershipFactory(project=project, user=user, role="viewer")
    client = APIClient()

    response = client.post(
        TOKEN_URL, {"username": "alice", "password": "pw-for-tests"}, format="json"
    )

    assert response.status_code == 200
    token = response.json()["token"]
    assert AuthToken.objects.get(user=user).token_key == token[:15]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    listed = client.get(PROJECTS_URL)
    assert listed.status_code == 200
    assert [p["id"] for p in listed.json()] == [project.pk]


@pytest.mark.parametrize("username", ["alice", "nobody"])
def test_token_with_bad_credentials_is_400_invalid_credentials(db, username):
    UserFactory(username="alice")

    response = APIClient().post(
        TOKEN_URL, {"username": username, "password": "wrong"}, format="json"
    )

    assert response.status_code == 400
    assert error_code(response) == "invalid_credentials"
    assert not AuthToken.objects.exists()


def test_token_for_inactive_user_is_refused(db):
    UserFactory(username="alice", is_active=False)

    response = APIClient().post(
        TOKEN_URL, {"username": "alice", "password": "pw-for-tests"}, format="json"
    )

    assert response.status_code == 400
    assert error_code(response) == "invalid_credentials"


def test_token_without_password_is_a_field_error(db):
    response = APIClient().post(TOKEN_URL, {"username": "alice"}, format="json")

    assert response.status_code == 400
    assert "password" in response.json()["error"]["fields"]


def test_an_invalid_token_is_401(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get(PROJECTS_URL)

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


# --- projects ------------------------------------------------------------------


def project_creator(**fields):
    """A staff user granted ``ccdash.add_project``, as a platform operator would."""
    user = UserFactory(is_staff=True, **fields)
    user.user_permissions.add(Permission.objects.get(codename="add_project"))
    return user


@pytest.fixture
def new_workspace(tmp_path):
    """A directory inside the configured workspaces root (tests/conftest.py)."""
    path = tmp_path / "new-workspace"
    path.mkdir()
    return path


def test_create_project_makes_the_caller_its_admin(db, new_workspace):
    user = project_creator(username="founder")

    response = client_for(user).post(
        PROJECTS_URL,
        {
            "name": "New",
            "workspaceRoot": str(new_workspace),
            "defaultProviderId": "local",
            "allowFallbackToLocal": False,
        },
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "New"
    assert body["workspaceRoot"] == str(new_workspace)
    assert body["defaultProviderId"] == "local"
    assert body["allowFallbackToLocal"] is False
    assert body["allowSelfApproval"] is False
    assert body["role"] == "admin"
    assert body["createdAt"]
    project = Project.objects.get(pk=body["id"])
    assert Membership.objects.get(project=project, user=user).role == "admin"
    assert AuditLog.objects.filter(project=project, action="project_created").exists()


def test_create_project_defaults_to_local_with_fallback(db, new_workspace):
    response = client_for(project_creator()).post(
        PROJECTS_URL, {"name": "New", "workspaceRoot": str(new_workspace)}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["defaultProviderId"] == "local"
    assert response.json()["allowFallbackToLocal"] is True


def test_superuser_may_create_a_project(db, new_workspace):
    root = UserFactory(is_staff=True, is_superuser=True)

    response = client_for(root).post(
        PROJECTS_URL, {"name": "New", "workspaceRoot": str(new_workspace)}, format="json"
    )

    assert response.status_code == 201


@pytest.mark.parametrize("is_staff", [False, True])
def test_create_project_without_the_add_project_permission_is_403(db, new_workspace, is_staff):
    # An ordinary account used to create a project (becoming its admin) and
    # choose any workspace, "/" included.
    response = client_for(UserFactory(is_staff=is_staff)).post(
        PROJECTS_URL, {"name": "Mine", "workspaceRoot": str(new_workspace)}, format="json"
    )

    assert response.status_code == 403
    assert error_code(response) == "permission_denied"
    assert "ccdash.add_project" in response.json()["error"]["message"]
    assert not Project.objects.exists()


def _refused_workspace(root: str):
    response = client_for(project_creator()).post(
        PROJECTS_URL, {"name": "New", "workspaceRoot": root}, format="json"
    )
    assert response.status_code == 400, response.json()
    assert error_code(response) == "invalid"
    assert "workspaceRoot" in response.json()["error"]["fields"]
    assert not Project.objects.exists()
    return response.json()["error"]["fields"]["workspaceRoot"]


@pytest.mark.parametrize("root", ["relative/dir", "/definitely/not/a/dir", ""])
def test_create_project_needs_an_existing_absolute_workspace(db, root):
    _refused_workspace(root)


def test_create_project_with_a_file_as_workspace_is_refused(db, tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")

    _refused_workspace(str(a_file))


def test_workspace_root_slash_is_refused_for_staff_too(db):
    assert _refused_workspace("/")


def test_the_service_checkout_is_not_a_workspace(db, settings):
    # Even with a root that contains the checkout (a careless "/").
    settings.EXECUTION_WORKSPACES_ROOT = "/"
    _refused_workspace(str(settings.BASE_DIR))
    _refused_workspace(str(settings.BASE_DIR / "ccdash"))
    _refused_workspace(str(settings.BASE_DIR.parent))


def test_workspace_outside_the_root_is_refused(db, settings, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    settings.EXECUTION_WORKSPACES_ROOT = tmp_path / "root"
    (tmp_path / "root").mkdir()

    _refused_workspace(str(outside))
    # The root itself is shared by every project: not a workspace either.
    _refused_workspace(str(tmp_path / "root"))


def test_workspace_reaching_outside_through_a_symlink_is_refused(db, settings, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    settings.EXECUTION_WORKSPACES_ROOT = root

    _refused_workspace(str(root / "escape"))
    _refused_workspace(str(root / ".." / ".." / ".."))


def test_workspace_is_stored_resolved(db, settings, tmp_path):
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "link").symlink_to(root / "real")
    settings.EXECUTION_WORKSPACES_ROOT = root

    response = client_for(project_creator()).post(
        PROJECTS_URL, {"name": "New", "workspaceRoot": str(root / "link")}, format="json"
    )

    assert response.status_code == 201
    assert Project.objects.get().workspace_root == str(root / "real")


def test_create_project_with_unknown_default_provider_is_refused(db, new_workspace):
    response = client_for(project_creator()).post(
        PROJECTS_URL,
        {"name": "New", "workspaceRoot": str(new_workspace), "defaultProviderId": "nope"},
        format="json",
    )

    assert response.status_code == 400
    assert "defaultProviderId" in response.json()["error"]["fields"]


def test_project_list_shows_only_the_callers_projects_with_their_role(
    project, operator, other_project
):
    response = client_for(operator).get(PROJECTS_URL)

    assert response.status_code == 200
    assert response.json() == [
        {
            "id": project.pk,
            "name": project.name,
            "workspaceRoot": project.workspace_root,
            "defaultProviderId": "local",
            "allowFallbackToLocal": True,
            "allowSelfApproval": False,
            "agentRunsRequireApproval": False,
            "promptPatterns": [],
            "maxPromptLength": 20_000,
            "agentFallbackChain": [],
            "role": "operator",
            "createdAt": response.json()[0]["createdAt"],
        }
    ]


def test_project_detail_for_a_member(project, viewer_client):
    response = viewer_client.get(f"/api/projects/{project.pk}/")

    assert response.status_code == 200
    assert response.json()["role"] == "viewer"


def test_project_detail_of_another_project_is_404(operator_client, other_project):
    response = operator_client.get(f"/api/projects/{other_project.pk}/")

    assert response.status_code == 404
    assert error_code(response) == "not_found"


# --- members -------------------------------------------------------------------


def test_admin_adds_a_member(project, admin_client):
    UserFactory(username="newcomer")

    response = admin_client.post(
        members_url(project), {"username": "newcomer", "role": "operator"}, format="json"
    )

    assert response.status_code == 201
    assert response.json() == {"username": "newcomer", "role": "operator"}
    assert Membership.objects.get(project=project, user__username="newcomer").role == "operator"
    audit = AuditLog.objects.get(project=project, action="member_added")
    assert audit.actor == f"admin-{project.pk}"
    assert audit.payload == {"username": "newcomer", "role": "operator"}


def test_admin_changes_a_members_role(project, admin_client, operator):
    response = admin_client.post(
        members_url(project), {"username": operator.username, "role": "approver"}, format="json"
    )

    assert response.status_code == 200
    assert Membership.objects.get(project=project, user=operator).role == "approver"
    assert AuditLog.objects.filter(project=project, action="member_role_changed").exists()


def test_admin_removes_a_member(project, admin_client, operator):
    response = admin_client.delete(
        members_url(project), {"username": operator.username}, format="json"
    )

    assert response.status_code == 204
    assert not Membership.objects.filter(project=project, user=operator).exists()
    audit = AuditLog.objects.get(project=project, action="member_removed")
    assert audit.payload == {"username": operator.username, "role": "operator"}


def test_admin_removes_a_member_named_in_the_query_string(project, admin_client, operator):
    response = admin_client.delete(f"{members_url(project)}?username={operator.username}")

    assert response.status_code == 204
    assert not Membership.objects.filter(project=project, user=operator).exists()


def test_removed_member_loses_access(project, admin_client, operator):
    admin_client.delete(members_url(project), {"username": operator.username}, format="json")

    assert client_for(operator).get(f"/api/projects/{project.pk}/").status_code == 404


def test_operator_cannot_manage_members(project, operator_client, viewer):
    UserFactory(username="newcomer")

    added = operator_client.post(
        members_url(project), {"username": "newcomer", "role": "admin"}, format="json"
    )
    removed = operator_client.delete(
        members_url(project), {"username": viewer.username}, format="json"
    )

    assert added.status_code == 403
    assert error_code(added) == "permission_denied"
    assert removed.status_code == 403
    assert error_code(removed) == "permission_denied"
    assert not Membership.objects.filter(user__username="newcomer").exists()
    assert Membership.objects.filter(project=project, user=viewer).exists()


def test_adding_an_unknown_user_is_400(project, admin_client):
    response = admin_client.post(
        members_url(project), {"username": "ghost", "role": "viewer"}, format="json"
    )

    assert response.status_code == 400
    assert "username" in response.json()["error"]["fields"]


def test_adding_with_an_unknown_role_is_400(project, admin_client):
    UserFactory(username="newcomer")

    response = admin_client.post(
        members_url(project), {"username": "newcomer", "role": "owner"}, format="json"
    )

    assert response.status_code == 400
    assert "role" in response.json()["error"]["fields"]


def test_removing_a_non_member_is_400(project, admin_client):
    UserFactory(username="stranger")

    response = admin_client.delete(members_url(project), {"username": "stranger"}, format="json")

    assert response.status_code == 400
    assert "username" in response.json()["error"]["fields"]


def test_the_last_admin_cannot_leave_or_be_demoted(project, admin_member, admin_client):
    removed = admin_client.delete(
        members_url(project), {"username": admin_member.username}, format="json"
    )
    demoted = admin_client.post(
        members_url(project), {"username": admin_member.username, "role": "viewer"}, format="json"
    )

    assert removed.status_code == 409
    assert error_code(removed) == "last_admin"
    assert demoted.status_code == 409
    assert Membership.objects.get(project=project, user=admin_member).role == "admin"


def test_an_admin_may_leave_when_another_admin_remains(project, admin_member, admin_client):
    MembershipFactory(project=project, user=UserFactory(username="second-admin"), role="admin")

    response = admin_client.delete(
        members_url(project), {"username": admin_member.username}, format="json"
    )

    assert response.status_code == 204


def test_members_of_another_project_are_404(admin_client, other_project):
    UserFactory(username="newcomer")

    listed = admin_client.get(members_url(other_project))
    added = admin_client.post(
        members_url(other_project), {"username": "newcomer", "role": "admin"}, format="json"
    )

    assert listed.status_code == 404
    assert added.status_code == 404
    assert not Membership.objects.filter(user__username="newcomer").exists()


def test_any_member_lists_members(project, viewer_client, operator):
    response = viewer_client.get(members_url(project))

    assert response.status_code == 200
    assert {"username": operator.username, "role": "operator"} in response.json()


def test_project_of_a_new_user_is_not_visible_to_others(db, tmp_path):
    ProjectFactory(workspace_root=str(tmp_path))

    assert client_for(UserFactory()).get(PROJECTS_URL).json() == []


def test_the_admin_project_form_refuses_a_workspace_outside_the_root(db):
    from django.test import Client

    root = UserFactory(is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(root)

    response = client.post(
        "/admin/ccdash/project/add/",
        {
            "name": "Rooted",
            "workspace_root": "/",
            "allow_fallback_to_local": "on",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 200  # the form again, with the error
    assert "EXECUTION_WORKSPACES_ROOT" in response.content.decode() or (
        "checkout" in response.content.decode()
    )
    assert not Project.objects.filter(name="Rooted").exists()
