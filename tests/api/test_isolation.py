"""Spec §5 scoping: nothing of another project exists for the caller (404,
never 403), and nobody anonymous gets anything (401)."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from execution.models import Run
from tests.api.helpers import add_events, error_code, make_run

pytestmark = pytest.mark.django_db

RUN_ACTIONS = ["approve", "reject", "cancel", "retry", "reconcile"]


@pytest.mark.parametrize("path", ["", "/events"])
def test_reading_another_projects_run_is_404(operator_client, other_run, path):
    add_events(other_run, 2)

    response = operator_client.get(f"/api/execution/runs/{other_run.pk}{path}")

    assert response.status_code == 404
    assert error_code(response) == "not_found"
    assert "secret-b" not in response.content.decode()


@pytest.mark.parametrize("action", RUN_ACTIONS)
def test_acting_on_another_projects_run_is_404_even_for_an_admin(admin_client, other_run, action):
    before = Run.objects.count()

    response = admin_client.post(f"/api/execution/runs/{other_run.pk}/{action}")

    assert response.status_code == 404
    assert error_code(response) == "not_found"
    other_run.refresh_from_db()
    assert other_run.status == "failed"
    assert Run.objects.count() == before


def test_a_missing_run_and_a_foreign_run_answer_the_same(operator_client, other_run):
    foreign = operator_client.get(f"/api/execution/runs/{other_run.pk}")
    missing = operator_client.get("/api/execution/runs/999999")

    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


def test_another_projects_runs_are_not_listed(project, operator_client, other_run):
    mine = make_run(project)

    everything = operator_client.get("/api/execution/runs").json()
    filtered = operator_client.get(
        "/api/execution/runs", {"projectId": other_run.project_id}
    ).json()

    assert [r["id"] for r in everything["results"]] == [mine.pk]
    assert everything["count"] == 1
    assert filtered == {"count": 0, "next": None, "previous": None, "results": []}


def test_creating_a_run_in_another_project_is_404(operator_client, other_project):
    response = operator_client.post(
        "/api/execution/runs", {"projectId": other_project.pk, "command": "echo hi"}, "json"
    )

    assert response.status_code == 404
    assert not Run.objects.filter(project=other_project).exists()


ENDPOINTS = [
    ("get", "/api/projects/"),
    ("post", "/api/projects/"),
    ("get", "/api/projects/{project}/"),
    ("get", "/api/projects/{project}/members"),
    ("post", "/api/projects/{project}/members"),
    ("delete", "/api/projects/{project}/members"),
    ("post", "/api/execution/policy-check"),
    ("get", "/api/execution/runs"),
    ("post", "/api/execution/runs"),
    ("get", "/api/execution/runs/{run}"),
    ("get", "/api/execution/runs/{run}/events"),
    *[("post", f"/api/execution/runs/{{run}}/{action}") for action in RUN_ACTIONS],
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_anonymous_is_401_everywhere(project, method, path):
    run = make_run(project, status="failed")
    url = path.format(project=project.pk, run=run.pk)

    response = getattr(APIClient(), method)(url, {}, format="json")

    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"
    # DRF answers 401 (not 403) only because an authenticator names a scheme.
    assert response["WWW-Authenticate"] == "Token"
    run.refresh_from_db()
    assert run.status == "failed"
    assert Run.objects.count() == 1
