"""Fixtures for the API specs: a viewer client and a second project (B) that
the ``project`` fixture's members do not belong to."""

from __future__ import annotations

import pytest

from tests.conftest import client_for
from tests.factories import MembershipFactory, ProjectFactory, RunFactory, UserFactory


@pytest.fixture
def viewer_client(viewer):
    return client_for(viewer)


@pytest.fixture
def other_project(db, tmp_path):
    """Project B: none of the ``project`` fixture's members belong to it."""
    root = tmp_path / "workspace-b"
    root.mkdir()
    other = ProjectFactory(name="Other", workspace_root=str(root))
    MembershipFactory(project=other, user=UserFactory(username="b-admin"), role="admin")
    return other


@pytest.fixture
def other_run(other_project):
    return RunFactory(project=other_project, status="failed", command="echo secret-b")
