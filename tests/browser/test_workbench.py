"""The workbench in a real browser (Chromium): what a person sees and does.

The app is served by pytest-django's ``live_server`` (tasks run inline, so a
launch dispatches during its request); the provider simulators listen on
loopback. Reconcile sweeps are run by the test, as the reconciler process
would, and the page must show their effects without a reload.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from connectors.services import update_config, write_credentials
from execution.models import Run
from execution.reconciler import reconcile_sweep
from tests.factories import MembershipFactory, ProjectFactory, RunFactory, UserFactory
from tests.sandboxing import require_bwrap

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "pw-for-tests"
HELD = "echo browser [sim:hold]"


@pytest.fixture(autouse=True)
def _fast_reconcile(settings):
    settings.EXECUTION = {**settings.EXECUTION, "STALE_AFTER_S": 0.5, "CIRCUIT_RESET_S": 0.2}


@pytest.fixture
def team(tmp_path, settings):
    root = tmp_path / "ws"
    root.mkdir()
    project = ProjectFactory(name="Demo", workspace_root=str(root))
    users = {}
    for role in ("viewer", "operator", "approver", "admin"):
        users[role] = UserFactory(username=f"b-{role}")
        MembershipFactory(project=project, user=users[role], role=role)
    return project, users


def configure(project, sim, provider_id: str) -> None:
    update_config(
        project,
        provider_id,
        actor="test",
        enabled=True,
        settings={**sim.demo_settings, "baseUrl": sim.url},
    )
    write_credentials(project, provider_id, sim.demo_credentials(), user=None)


def login(page, live_server, username: str, next_path: str = "/") -> None:
    page.goto(f"{live_server.url}{next_path}")
    expect(page).to_have_url(re.compile(r"/login/"))
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#logout")).to_be_visible()


def sweep(run_id: int) -> Run:
    Run.objects.filter(pk=run_id).update(next_reconcile_at=timezone.now() - timedelta(seconds=1))
    reconcile_sweep()
    return Run.objects.get(pk=run_id)


def log_lines(page) -> list[str]:
    return page.locator("#log .ev .tx").all_inner_texts()


def launch(page, provider_id: str, text: str) -> int:
    page.select_option("#provider", provider_id)
    box = "#prompt" if page.locator("#prompt").is_visible() else "#command"
    page.fill(box, text)
    page.click("#launch-button")
    expect(page).to_have_url(re.compile(r"/runs/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def test_login_logout_and_an_expired_session(new_page, live_server, team):
    _, users = team
    page = new_page()
    login(page, live_server, users["operator"].username)
    expect(page.locator("h2#runs-title")).to_be_visible()
    page.click("#logout")
    expect(page).to_have_url(re.compile(r"/login/"))
    login(page, live_server, users["operator"].username)
    page.context.clear_cookies()  # the session ends (expiry, logout elsewhere)
    page.goto(f"{live_server.url}/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/"))
    expect(page.get_by_text("Your session has ended")).to_be_visible()


def test_a_local_launch_shows_its_log_live_with_line_breaks_and_no_line_twice(
    new_page, live_server, team
):
    _, users = team
    page = new_page()
    login(page, live_server, users["operator"].username)
    run_id = launch(page, "local", "printf 'alpha\\nbeta\\ngamma\\n'")
    expect(page.locator("#status-badge")).to_have_text("succeeded", timeout=15_000)
    expect(page.locator("#stream-state")).to_have_text("complete")
    lines = [line for line in "\n".join(log_lines(page)).split("\n") if not line.startswith("[")]
    assert lines == ["alpha", "beta", "gamma"]
    assert Run.objects.get(pk=run_id).status == "succeeded"


@pytest.mark.parametrize("provider_id", ["github_actions", "cursor", "devin"])
def test_a_launch_on_an_external_provider_streams_its_log_without_reload(
    new_page, live_server, team, sim_for, provider_id
):
    project, users = team
    sim = sim_for(provider_id)
    configure(project, sim, provider_id)
    page = new_page()
    login(page, live_server, users["operator"].username)
    run_id = launch(page, provider_id, HELD)
    run = Run.objects.get(pk=run_id)
    assert run.provider_id == provider_id and run.provider_run_id
    for _ in range(3):
        sweep(run_id)
        time.sleep(0.4)
    sim.advance(run.provider_run_id)
    deadline = time.monotonic() + 15
    while sweep(run_id).status not in {"succeeded", "failed"}:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    expect(page.locator("#status-badge")).to_have_text("succeeded", timeout=10_000)
    expect(page.locator("#stream-state")).to_have_text("complete")
    shown = page.locator("#log .ev").evaluate_all("els => els.map(e => e.dataset.seq)")
    assert len(shown) == len(set(shown)), "an event was shown twice"
    output = [
        line
        for text in page.locator("#log .ev:not(.system) .tx").all_inner_texts()
        for line in text.split("\n")
        if line.strip()
    ]
    assert output, "no output arrived"
    repeated = [line for line, n in Counter(output).items() if n > 1]
    assert not repeated, f"lines shown twice: {repeated}"


def test_a_second_user_approves_with_a_comment(new_page, live_server, team):
    project, users = team
    run = RunFactory(
        project=project,
        created_by=users["operator"],
        status="awaiting_approval",
        policy_verdict="requires_approval",
        requires_approval=True,
        command="echo approved-run",
    )
    own = new_page()
    login(own, live_server, users["operator"].username, f"/runs/{run.pk}")
    expect(own.locator("[data-action=approve]")).to_have_count(0)

    page = new_page()
    login(page, live_server, users["approver"].username, f"/runs/{run.pk}")
    page.fill("#decision-comment", "looks fine")
    page.click("[data-action=approve]")
    expect(page.locator("#status-badge")).not_to_have_text("awaiting_approval", timeout=15_000)
    expect(page.locator("#run-details dd", has_text="looks fine")).to_be_visible()
    # the creator's open page follows without a reload, and says so aloud
    expect(own.locator("#status-badge")).not_to_have_text("awaiting_approval", timeout=10_000)
    expect(own.locator("#announce[aria-live=polite]")).to_contain_text(f"Run #{run.pk} is now")
    seqs = own.locator("#log .ev").evaluate_all("els => els.map(e => e.dataset.seq)")
    assert len(seqs) == len(set(seqs))


def test_cancel_asks_for_confirmation(new_page, live_server, team, github_sim):
    project, users = team
    configure(project, github_sim, "github_actions")
    page = new_page()
    login(page, live_server, users["operator"].username)
    launch(page, "github_actions", HELD)
    messages = []

    def answer(dialog):
        messages.append(dialog.message)
        dialog.dismiss() if len(messages) == 1 else dialog.accept()

    page.on("dialog", answer)
    page.click("[data-action=cancel]")  # dismissed: nothing happens
    expect(page.locator("#status-badge")).not_to_have_text(re.compile("cancel"))
    page.click("[data-action=cancel]")
    expect(page.locator("#status-badge")).to_have_text(re.compile("cancel"), timeout=10_000)
    assert all("Cancel run" in m for m in messages) and len(messages) == 2


def test_a_refused_field_is_shown_beside_it(new_page, live_server, team):
    _, users = team
    page = new_page()
    login(page, live_server, users["operator"].username)
    page.fill("#command", "echo hi")
    page.click("summary")
    page.fill("#feature", "f" * 201)
    page.click("#launch-button")
    error = page.locator(".field-error[data-field=featureId]")
    expect(error).not_to_be_empty()
    expect(page.locator("#feature")).to_have_attribute("aria-invalid", "true")
    assert "{" not in page.locator("#launch-error").inner_text()  # no raw JSON


def test_the_provider_choice_survives_a_reload_and_shows_capabilities_and_health(
    new_page, live_server, team, cursor_sim
):
    project, users = team
    configure(project, cursor_sim, "cursor")
    page = new_page()
    login(page, live_server, users["operator"].username)
    page.select_option("#provider", "cursor")
    expect(page.locator("#provider-info")).to_contain_text("can cancel")
    expect(page.locator("#prompt")).to_be_visible()
    page.reload()
    expect(page.locator("#provider")).to_have_value("cursor")
    page.select_option("#provider", "local")
    expect(page.locator("#command")).to_be_visible()
    page.fill("#command", "rm -rf /")
    expect(page.locator("#policy-preview")).to_contain_text("deny", timeout=5_000)


def test_sync_badge_goes_stale_during_an_outage_and_recovers(
    new_page, live_server, team, github_sim
):
    project, users = team
    configure(project, github_sim, "github_actions")
    page = new_page()
    login(page, live_server, users["operator"].username)
    run_id = launch(page, "github_actions", HELD)
    sweep(run_id)
    expect(page.locator("#sync-badge")).to_have_text("in_sync")
    github_sim.fail_next(50, status=503)
    deadline = time.monotonic() + 15
    while sweep(run_id).sync_status == "in_sync":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    expect(page.locator("#sync-badge")).to_have_text(re.compile("stale|error"), timeout=10_000)
    github_sim.clear_faults()
    deadline = time.monotonic() + 15
    while sweep(run_id).sync_status != "in_sync":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    expect(page.locator("#sync-badge")).to_have_text("in_sync", timeout=10_000)


def test_settings_panel_sets_masks_checks_replaces_and_clears_a_credential(
    new_page, live_server, team, devin_sim
):
    project, users = team
    update_config(
        project,
        "devin",
        actor="test",
        enabled=True,
        settings={**devin_sim.demo_settings, "baseUrl": devin_sim.url},
    )
    token = devin_sim.demo_credentials()["apiKey"]
    page = new_page()
    login(page, live_server, users["admin"].username, f"/projects/{project.pk}/settings")
    card = page.locator("#provider-devin")
    form = card.locator("form[data-field=apiKey]")
    expect(form.locator("[data-role=secret-status]")).to_have_text("not set")
    form.locator("input[name=value]").fill(token)
    form.locator("button[type=submit]").click()
    expect(form.locator("[data-role=secret-status]")).to_have_text(re.compile(r"^set ••••\S+$"))
    assert token not in page.content()
    expect(form.locator("input[name=value]")).to_have_value("")
    card.locator("[data-do=check]").click()
    expect(card.locator("[data-role=health-badge]")).to_have_text("health: healthy")
    form.locator("input[name=value]").fill("another-key-9876")
    form.locator("button[type=submit]").click()
    expect(form.locator("[data-role=secret-status]")).to_have_text("set ••••9876")
    page.on("dialog", lambda dialog: dialog.accept())
    form.locator("[data-do=clear]").click()
    expect(form.locator("[data-role=secret-status]")).to_have_text("not set")
    # below admin: read-only
    viewer = new_page()
    login(viewer, live_server, users["viewer"].username, f"/projects/{project.pk}/settings")
    expect(viewer.locator("#provider-devin input[type=password]")).to_have_count(0)
    expect(viewer.locator("#provider-devin input[name=enabled]")).to_be_disabled()


def test_a_phone_sized_window_never_scrolls_sideways(new_page, live_server, team):
    project, users = team
    run = RunFactory(
        project=project,
        command="pytest " + "very-long-argument-" * 20,
        status="failed",
        last_sync_error="HTTP 503 " * 20,
    )
    page = new_page(viewport={"width": 390, "height": 844})
    login(page, live_server, users["operator"].username)
    for path in ("/", f"/runs/{run.pk}", f"/projects/{project.pk}/settings"):
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("networkidle")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide"


def test_dark_mode_follows_the_system(new_page, live_server, team):
    _, users = team
    page = new_page(color_scheme="dark")
    login(page, live_server, users["operator"].username)
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(13, 17, 23)"
    light = new_page(color_scheme="light")
    login(light, live_server, users["operator"].username)
    assert light.evaluate("getComputedStyle(document.body).backgroundColor") != background


def test_keyboard_reaches_a_run_and_opens_it(new_page, live_server, team):
    project, users = team
    run = RunFactory(project=project, command="echo keyboard")
    page = new_page()
    login(page, live_server, users["viewer"].username)
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('run-link')"):
            break
    else:
        pytest.fail("Tab never reached a run")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/runs/{run.pk}$"))
    page.go_back()
    expect(page.locator(f"tr[data-run='{run.pk}']")).to_have_class(re.compile("selected"))


def test_an_unhealthy_provider_warns_whether_a_run_falls_back_or_fails(
    new_page, live_server, team, github_sim, devin_sim
):
    project, users = team
    configure(project, github_sim, "github_actions")
    configure(project, devin_sim, "devin")
    from connectors.models import ProviderConfig

    ProviderConfig.objects.filter(project=project).update(
        health_status="failing",
        health_message="HTTP 401: bad credentials",
        health_checked_at=timezone.now(),
    )
    page = new_page()
    login(page, live_server, users["operator"].username)
    page.select_option("#provider", "github_actions")
    expect(page.locator("#provider-info")).to_contain_text("HTTP 401: bad credentials")
    expect(page.locator("#provider-info")).to_contain_text("checked")
    expect(page.locator("#provider-warning")).to_contain_text("would fall back to local")
    expect(page.locator("#command")).to_be_visible()
    page.select_option("#provider", "devin")
    expect(page.locator("#prompt")).to_be_visible()
    expect(page.locator("#provider-warning")).to_contain_text("would fail")


def test_a_waiting_agent_run_takes_a_reply_and_a_finished_one_a_follow_up(
    new_page, live_server, team, cursor_sim, devin_sim
):
    project, users = team
    configure(project, devin_sim, "devin")
    configure(project, cursor_sim, "cursor")
    page = new_page()
    login(page, live_server, users["operator"].username)
    run_id = launch(page, "devin", "Fix the flaky test [sim:hold]")
    run = Run.objects.get(pk=run_id)
    devin_sim.set_state(run.provider_run_id, "blocked")
    deadline = time.monotonic() + 15
    while sweep(run_id).status != "waiting":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    expect(page.locator("#reply-text")).to_be_visible(timeout=10_000)
    page.fill("#reply-text", "Use the fixture in conftest.py")
    page.click("[data-action=messages]")
    deadline = time.monotonic() + 10
    while not any(
        r["method"] == "POST" and r["path"].endswith("/message") for r in devin_sim.request_log()
    ):
        assert time.monotonic() < deadline, "the reply never reached Devin"
        time.sleep(0.1)
    expect(page.locator("#action-error")).to_have_text("")

    page.goto(f"{live_server.url}/")
    cursor_id = launch(page, "cursor", "Add a README section")
    cursor_run = Run.objects.get(pk=cursor_id)
    sweep(cursor_id)
    cursor_sim.advance(cursor_run.provider_run_id)
    deadline = time.monotonic() + 15
    while sweep(cursor_id).status not in {"succeeded", "failed"}:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    expect(page.locator("#follow-up-text")).to_be_visible(timeout=10_000)
    page.fill("#follow-up-text", "Now add a changelog entry")
    page.click("[data-action=follow-up]")
    expect(page).not_to_have_url(re.compile(rf"/runs/{cursor_id}$"))
    expect(page.locator(".chain")).to_contain_text(f"#{cursor_id}")
    assert Run.objects.filter(follow_up_of_id=cursor_id).count() == 1


@pytest.mark.parametrize(
    ("mode", "bwrap", "badge", "warning"),
    [
        ("none", "/nonexistent/bwrap", "unsandboxed", None),
        ("bwrap", "/nonexistent/bwrap", "no sandbox: runs fail", "apt-get install bubblewrap"),
    ],
)
def test_the_launch_panel_says_when_local_runs_have_no_sandbox(
    new_page, live_server, team, settings, mode, bwrap, badge, warning
):
    settings.EXECUTION_SANDBOX = mode
    settings.EXECUTION_BWRAP = bwrap
    _, users = team
    page = new_page()
    login(page, live_server, users["operator"].username)

    page.select_option("#provider", "local")

    expect(page.locator("#provider-info")).to_contain_text(badge)
    if warning:
        expect(page.locator("#provider-warning")).to_contain_text(warning)
    else:
        expect(page.locator("#provider-warning")).to_be_hidden()


def test_the_launch_panel_shows_no_sandbox_badge_when_local_runs_are_sandboxed(
    new_page, live_server, team, settings
):
    settings.EXECUTION_SANDBOX = "bwrap"
    settings.EXECUTION_BWRAP = require_bwrap()
    _, users = team
    page = new_page()
    login(page, live_server, users["operator"].username)

    page.select_option("#provider", "local")

    expect(page.locator("#provider-info")).to_contain_text("takes a command")
    expect(page.locator("#provider-info")).not_to_contain_text("unsandboxed")
    expect(page.locator("#provider-info")).not_to_contain_text("no sandbox")


def test_log_tools_timestamps_search_copy_and_download(new_page, live_server, team):
    from execution.events import NewEvent, append_events

    project, users = team
    run = RunFactory(project=project, status="succeeded", command="echo tools")
    append_events(
        run.pk,
        [
            NewEvent("stdout", "output", text="first line\nsecond line\n"),
            NewEvent("stderr", "output", text="an error line\n"),
            NewEvent("system", "status_changed", text="running → succeeded"),
        ],
    )
    page = new_page(permissions=["clipboard-read", "clipboard-write"])
    login(page, live_server, users["viewer"].username, f"/runs/{run.pk}")
    expect(page.locator("#stream-state")).to_have_text("complete")
    # stderr and system events are styled apart from stdout
    colors = page.locator("#log .ev").evaluate_all("els => els.map(e => getComputedStyle(e).color)")
    assert len(set(colors)) == 3
    expect(page.locator("#log .ts").first).to_be_hidden()
    page.check("#show-times")
    expect(page.locator("#log .ts").first).to_be_visible()
    page.fill("#log-search", "error")
    expect(page.locator("#search-count")).to_have_text("1 matching line")
    page.fill("#log-search", "")
    with page.expect_download() as download:
        page.click("#download-log")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert "first line\nsecond line\n" in text and "an error line" in text
    page.uncheck("#show-times")
    page.click("#copy-log")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied.startswith("first line\nsecond line\nan error line\n")


def test_project_settings_are_saved_by_an_admin_with_errors_beside_fields(
    new_page, live_server, team
):
    project, users = team
    page = new_page()
    login(page, live_server, users["admin"].username, f"/projects/{project.pk}/settings")
    form = page.locator("form[data-form=project]")
    form.locator("input[name=agentRunsRequireApproval]").check()
    form.locator("textarea[name=promptPatterns]").fill("Bad Code: prod")
    form.locator("button[type=submit]").click()
    expect(form.locator(".field-error[data-field=promptPatterns]")).not_to_be_empty()
    form.locator("textarea[name=promptPatterns]").fill("production: \\bprod(uction)?\\b")
    form.locator("input[name=agentFallbackChain]").fill("cursor, devin")
    form.locator("button[type=submit]").click()
    expect(form.locator(".ok-text")).to_have_text("Saved.")
    project.refresh_from_db()
    assert project.agent_runs_require_approval is True
    assert project.agent_fallback_chain == ["cursor", "devin"]
    assert project.prompt_patterns == [
        {"pattern": "\\bprod(uction)?\\b", "reasonCode": "production"}
    ]
