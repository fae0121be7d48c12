"""``GET runs`` at scale: a constant number of queries whatever the filter or
page, keyset paging, text search, "mine" and "awaiting my approval"."""

from __future__ import annotations

import pytest

from execution.models import Run
from tests.api.helpers import make_run
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

RUNS_URL = "/api/execution/runs"

FILTERS = [
    "",
    "&status=running",
    "&status=running&status=queued",
    "&providerId=cursor",
    "&syncStatus=stale",
    "&featureId=f-1",
    "&offset=1",
    "&beforeId=999999",
    "&q=pytest",
    "&mine=true",
    "&awaitingMyApproval=true",
]


def seed(project, creators, count: int) -> None:
    creators = creators if isinstance(creators, list) else [creators]
    for n in range(count):
        make_run(
            project,
            created_by=creators[n % len(creators)],
            approved_by=creators[0] if n % 2 else None,
            status=["running", "queued", "awaiting_approval"][n % 3],
            provider_id=["local", "cursor"][n % 2],
            sync_status=["in_sync", "stale"][n % 2],
            feature_id=f"f-{n % 3}",
            command=f"pytest -k case_{n}",
        )


@pytest.mark.parametrize("query", FILTERS)
def test_list_query_count_does_not_grow_with_runs(
    query, project, operator, approver, approver_client, django_assert_num_queries
):
    seed(project, [operator, approver], 3)
    # the caller's projects, the count, and the page (its ids chosen on the
    # index, its approver joined)
    with django_assert_num_queries(3):
        small = approver_client.get(f"{RUNS_URL}?projectId={project.pk}&limit=50{query}")
    assert small.status_code == 200
    seed(project, [operator, approver], 60)
    with django_assert_num_queries(3):
        large = approver_client.get(f"{RUNS_URL}?projectId={project.pk}&limit=50{query}")
    assert large.status_code == 200


def test_deep_offset_returns_the_right_rows(project, operator_client):
    seed(project, None, 30)
    ids = list(Run.objects.filter(project=project).order_by("-id").values_list("id", flat=True))
    page = operator_client.get(f"{RUNS_URL}?projectId={project.pk}&limit=5&offset=20").json()
    assert [run["id"] for run in page["results"]] == ids[20:25]
    assert page["count"] == 30


def test_before_id_pages_by_keyset(project, operator_client):
    seed(project, None, 12)
    ids = list(Run.objects.filter(project=project).order_by("-id").values_list("id", flat=True))
    first = operator_client.get(f"{RUNS_URL}?projectId={project.pk}&limit=5").json()
    # a run created while paging does not shift the next page
    make_run(project)
    last = first["results"][-1]["id"]
    second = operator_client.get(
        f"{RUNS_URL}?projectId={project.pk}&limit=5&beforeId={last}"
    ).json()
    assert [run["id"] for run in second["results"]] == ids[5:10]


def test_search_matches_command_text_case_insensitively(project, operator_client):
    make_run(project, command="pytest tests/unit")
    make_run(project, command="ruff check .")
    page = operator_client.get(f"{RUNS_URL}?projectId={project.pk}&q=RUFF").json()
    assert [run["command"] for run in page["results"]] == ["ruff check ."]


def test_mine_shows_only_my_runs(project, operator, operator_client):
    other = UserFactory(username="someone-else")
    make_run(project, created_by=operator, command="mine")
    make_run(project, created_by=other, command="theirs")
    page = operator_client.get(f"{RUNS_URL}?projectId={project.pk}&mine=true").json()
    assert [run["command"] for run in page["results"]] == ["mine"]


def test_awaiting_my_approval_excludes_my_own_and_needs_the_approver_role(
    project, operator, approver, approver_client, operator_client
):
    make_run(project, created_by=operator, status="awaiting_approval", command="theirs")
    make_run(project, created_by=approver, status="awaiting_approval", command="my own")
    make_run(project, created_by=operator, status="queued", command="not waiting")
    page = approver_client.get(f"{RUNS_URL}?projectId={project.pk}&awaitingMyApproval=1").json()
    assert [run["command"] for run in page["results"]] == ["theirs"]
    # an operator approves nothing
    page = operator_client.get(f"{RUNS_URL}?projectId={project.pk}&awaitingMyApproval=1").json()
    assert page["results"] == []


def test_awaiting_my_approval_covers_only_projects_where_i_approve(
    project, other_project, approver, approver_client
):
    MembershipFactory(project=other_project, user=approver, role="viewer")
    make_run(other_project, status="awaiting_approval", command="elsewhere")
    make_run(project, status="awaiting_approval", command="here")
    page = approver_client.get(f"{RUNS_URL}?awaitingMyApproval=true").json()
    assert [run["command"] for run in page["results"]] == ["here"]


def test_a_large_total_is_counted_once_then_reused_briefly(
    project, operator_client, monkeypatch, django_assert_num_queries
):
    from django.core.cache import cache

    from execution.api import pagination

    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 3)
    cache.clear()
    seed(project, None, 6)
    url = f"{RUNS_URL}?projectId={project.pk}&limit=2"
    with django_assert_num_queries(4):  # projects, capped count, full count, page
        assert operator_client.get(url).json()["count"] == 6
    with django_assert_num_queries(2):  # projects, page: the total is reused, not counted
        assert operator_client.get(url).json()["count"] == 6
    # below the cap the count is always exact
    assert operator_client.get(f"{url}&status=queued").json()["count"] == 2
