"""Fixtures every test module can use: a project with a real workspace
directory, a user per role, and authenticated API clients."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from connectors.http import reset_clients
from connectors.providers.devin import adapter as devin_adapter
from connectors.providers.github_actions import adapter as github_adapter
from execution.reconcile import cadence
from tests.factories import MembershipFactory, ProjectFactory, UserFactory


@pytest.fixture(autouse=True)
def _fresh_http_clients():
    """Rate-limit gates and pools are process-wide: start each test clean."""
    reset_clients()
    cadence.forget()
    github_adapter.forget_listings()
    devin_adapter.forget_listings()
    yield
    reset_clients()


@pytest.fixture(autouse=True)
def _workspaces_root(settings, tmp_path):
    """Workspaces live in the test's own tmp directory: every workspace a test
    makes under ``tmp_path`` is inside the configured root, as production
    requires of real ones."""
    settings.EXECUTION_WORKSPACES_ROOT = tmp_path
    return tmp_path


@pytest.fixture(autouse=True)
def _fresh_shared_budgets(settings):
    """The Redis budget store outlives a test (the database one is rolled back)."""
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        names = list(client.scan_iter(match=f"{settings.BUDGET_REDIS_PREFIX}*", count=500))
        if names:
            client.delete(*names)
        client.close()


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "workspace"
    root.mkdir()
    return root


@pytest.fixture
def project(db, workspace):
    return ProjectFactory(name="Demo", workspace_root=str(workspace))


def _member(project, role: str):
    user = UserFactory(username=f"{role}-{project.pk}")
    MembershipFactory(project=project, user=user, role=role)
    return user


@pytest.fixture
def viewer(project):
    return _member(project, "viewer")


@pytest.fixture
def operator(project):
    return _member(project, "operator")


@pytest.fixture
def approver(project):
    return _member(project, "approver")


@pytest.fixture
def admin_member(project):
    return _member(project, "admin")


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


@pytest.fixture
def operator_client(operator):
    return client_for(operator)


@pytest.fixture
def approver_client(approver):
    return client_for(approver)


@pytest.fixture
def admin_client(admin_member):
    return client_for(admin_member)


@pytest.fixture
def anon_client():
    return APIClient()
