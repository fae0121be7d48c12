"""The workbench pages as the server renders them (the browser tests drive
the scripts): scoping, role-aware actions, filters, pages, the settings
panel, login and the favicon."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from connectors.models import ProviderConfig
from connectors.services import write_credentials
from tests.factories import MembershipFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db


def browser_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_pages_need_a_login_and_send_to_the_branded_login_page(project):
    response = Client().get("/runs/1")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/runs/1"
    page = Client().get(response["Location"]).content.decode()
    assert "Log in to CCDash" in page
    assert "Django administration" not in page
    assert "Your session has ended" in page


def test_logout_is_in_the_header_and_ends_the_session(project, operator):
    client = browser_for(operator)
    page = client.get("/").content.decode()
    assert 'action="/logout/"' in page
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_favicon_is_served(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301
    assert response["Location"].endswith("favicon.svg")


def test_runs_page_lists_runs_with_relative_and_exact_times_and_duration(project, operator):
    started = timezone.now() - timedelta(minutes=3)
    RunFactory(
        project=project,
        command="pytest -q tests/unit",
        status="succeeded",
        started_at=started,
        ended_at=started + timedelta(seconds=75),
    )
    page = browser_for(operator).get(f"/?projectId={project.pk}").content.decode()
    assert "pytest -q tests/unit" in page
    assert 'title="pytest -q tests/unit"' in page  # the full text on hover
    assert "ago</time>" in page or "just now</time>" in page
    assert " UTC" in page  # exact time in the title
    assert "1 min 15 s" in page


def test_runs_page_empty_states(project, operator):
    client = browser_for(operator)
    assert "No runs yet" in client.get(f"/?projectId={project.pk}").content.decode()
    page = client.get(f"/?projectId={project.pk}&status=failed").content.decode()
    assert "No runs match these filters" in page


def test_runs_page_pages_beyond_fifty_with_the_count(project, operator):
    for n in range(55):
        RunFactory(project=project, command=f"echo {n}")
    client = browser_for(operator)
    first = client.get(f"/?projectId={project.pk}").content.decode()
    assert "1\N{EN DASH}50 of 55" in first
    second = client.get(f"/?projectId={project.pk}&page=2").content.decode()
    assert "51\N{EN DASH}55 of 55" in second
    assert "echo 0<" in second and "echo 54<" not in second


def test_runs_page_filters_and_search(project, operator):
    RunFactory(project=project, command="ruff check .", status="failed", provider_id="local")
    RunFactory(project=project, command="pytest", status="succeeded", provider_id="cursor")
    client = browser_for(operator)
    assert (
        "ruff check"
        not in client.get(f"/?projectId={project.pk}&status=succeeded").content.decode()
    )
    assert (
        "pytest"
        not in client.get(f"/?projectId={project.pk}&q=RUFF").content.decode().split("<tbody>")[1]
    )
    assert (
        "ruff check"
        not in client.get(f"/?projectId={project.pk}&providerId=cursor").content.decode()
    )


def test_rows_fragment_is_only_the_list(project, operator):
    RunFactory(project=project, command="echo fragment")
    html = browser_for(operator).get(f"/?projectId={project.pk}&fragment=rows").content.decode()
    assert "echo fragment" in html
    assert "<html" not in html


def test_pending_approvals_counter_for_approvers(project, operator, approver):
    RunFactory(project=project, created_by=operator, status="awaiting_approval")
    assert "1 awaiting approval" in browser_for(approver).get("/").content.decode()
    assert "awaiting approval</a>" not in browser_for(operator).get("/").content.decode()
    # the list's refresh carries the counter too
    rows = browser_for(approver).get(f"/?projectId={project.pk}&fragment=rows")
    assert rows["X-Pending-Approvals"] == "1"


def test_run_page_shows_every_detail(project, operator, approver):
    now = timezone.now()
    first = RunFactory(project=project, status="failed", created_by=operator)
    run = RunFactory(
        project=project,
        command="make test\n  --verbose",
        feature_id="feat-42",
        cwd=str(project.workspace_root),
        created_by=operator,
        approved_by=approver,
        approved_at=now,
        status="failed",
        status_reason="exit_code",
        provider_id="github_actions",
        provider_run_id="991",
        provider_url="https://github.com/o/r/actions/runs/991",
        fallback_from_provider_id="cursor",
        sync_status="stale",
        last_sync_error="HTTP 503",
        last_reconciled_at=now,
        started_at=now - timedelta(seconds=30),
        ended_at=now,
        retry_of=first,
    )
    page = browser_for(operator).get(f"/runs/{run.pk}").content.decode()
    for text in [
        "make test\n  --verbose",
        "feat-42",
        str(project.workspace_root),
        f"by {operator.username}",
        f"by {approver.username}",
        "https://github.com/o/r/actions/runs/991",
        "fell back from cursor",
        "HTTP 503",
        "30 s",
        f'href="/runs/{first.pk}"',
        "y-stale",
    ]:
        assert text in page, text


def test_run_page_never_links_a_non_http_url(project, operator):
    run = RunFactory(project=project, provider_run_id="x", provider_url="javascript:alert(1)")
    page = browser_for(operator).get(f"/runs/{run.pk}").content.decode()
    assert "javascript:alert" not in page


def test_run_page_of_another_project_is_404(other_run, operator):
    assert browser_for(operator).get(f"/runs/{other_run.pk}").status_code == 404


@pytest.mark.parametrize(
    ("role", "status", "shown", "hidden"),
    [
        ("viewer", "running", [], ['data-action="cancel"', 'data-action="approve"']),
        ("operator", "running", ['data-action="cancel"'], ['data-action="approve"']),
        ("operator", "awaiting_approval", ['data-action="cancel"'], ['data-action="approve"']),
        ("approver", "awaiting_approval", ['data-action="approve"', 'data-action="reject"'], []),
        ("operator", "failed", ['data-action="retry"', "Run again"], ['data-action="cancel"']),
        ("operator", "succeeded", ["Run again"], ['data-action="retry"']),
    ],
)
def test_actions_follow_role_and_state(project, role, status, shown, hidden):
    user = UserFactory(username=f"u-{role}")
    MembershipFactory(project=project, user=user, role=role)
    run = RunFactory(project=project, status=status, created_by=UserFactory(username="creator"))
    page = browser_for(user).get(f"/runs/{run.pk}").content.decode()
    for text in shown:
        assert text in page, text
    for text in hidden:
        assert text not in page, text


def test_an_approver_does_not_get_approve_on_their_own_run(project, approver):
    run = RunFactory(project=project, status="awaiting_approval", created_by=approver)
    page = browser_for(approver).get(f"/runs/{run.pk}").content.decode()
    assert 'data-action="approve"' not in page
    assert "another approver approves it" in page


def test_details_fragment_is_only_the_details(project, operator):
    run = RunFactory(project=project, status="running")
    html = browser_for(operator).get(f"/runs/{run.pk}?fragment=details").content.decode()
    assert 'id="status-badge"' in html and "<html" not in html


def test_settings_panel_for_admins_never_shows_a_secret(project, admin_member):
    write_credentials(
        project, "github_actions", {"token": "sim-fake-token-supersecret1234"}, user=None
    )
    page = browser_for(admin_member).get(f"/projects/{project.pk}/settings").content.decode()
    assert "sim-fake-token-supersecret1234" not in page
    assert "supersecret" not in page
    assert "1234" in page  # the last four characters
    assert 'name="s:owner"' in page  # fields from the adapter's declared config
    assert "Save settings" in page and "Replace" in page and "Check health" in page
    assert ProviderConfig.objects.filter(project=project).exists()


def test_settings_panel_is_read_only_below_admin(project, operator):
    page = browser_for(operator).get(f"/projects/{project.pk}/settings").content.decode()
    assert "<fieldset disabled>" in page
    assert "Save settings" not in page
    assert 'type="password"' not in page
    assert "only a project admin can change them" in page


def test_settings_of_another_project_is_404(other_project, operator):
    assert browser_for(operator).get(f"/projects/{other_project.pk}/settings").status_code == 404


def test_cancel_stays_offered_while_the_provider_has_not_confirmed_it(project, operator):
    from execution.models import CancelState

    run = RunFactory(
        project=project,
        status="canceling",
        provider_id="github_actions",
        cancel_state=CancelState.ACCEPTED,
    )
    client = browser_for(operator)
    assert 'data-action="cancel"' not in client.get(f"/runs/{run.pk}").content.decode()
    run.cancel_state = CancelState.PENDING
    run.cancel_error = "HTTP 401: Bad credentials"
    run.save()
    page = client.get(f"/runs/{run.pk}").content.decode()
    assert 'data-action="cancel"' in page
    assert "has not confirmed the cancel yet: HTTP 401: Bad credentials" in page


def test_settings_say_how_local_runs_are_isolated(project, admin_member, monkeypatch):
    from execution import sandbox_config

    page = browser_for(admin_member).get(f"/projects/{project.pk}/settings").content.decode()
    expected = {
        "bwrap": "Local runs run in a bubblewrap sandbox.",
        "none": "Local runs are not sandboxed",
        "unavailable": "bubblewrap is required but not installed",
    }[sandbox_config.current_sandbox().mode]
    assert expected in page


def test_refresh_from_provider_is_offered_on_an_active_external_run(project, operator, viewer):
    external = RunFactory(project=project, status="running", provider_id="github_actions")
    local = RunFactory(project=project, status="running", provider_id="local")
    done = RunFactory(project=project, status="succeeded", provider_id="github_actions")
    client = browser_for(operator)
    assert 'data-action="reconcile"' in client.get(f"/runs/{external.pk}").content.decode()
    assert 'data-action="reconcile"' not in client.get(f"/runs/{local.pk}").content.decode()
    assert 'data-action="reconcile"' not in client.get(f"/runs/{done.pk}").content.decode()
    page = browser_for(viewer).get(f"/runs/{external.pk}").content.decode()
    assert 'data-action="reconcile"' not in page


def test_settings_show_the_github_webhook_url_and_its_last_delivery(project, admin_member):
    from django.utils import timezone

    from connectors.services import get_or_create_config

    config = get_or_create_config(project, "github_actions")
    config.last_webhook_at = timezone.now()
    config.save()
    page = browser_for(admin_member).get(f"/projects/{project.pk}/settings").content.decode()
    assert 'data-role="webhook-url"' in page
    assert "Last verified delivery: <time" in page
