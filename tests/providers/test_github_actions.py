"""GitHub Actions adapter against the GitHub simulator:
dispatch with and without run details, recovery by correlation input, the
state table, incremental job logs, cancel, rate limits, health and a revoked
token."""

from __future__ import annotations

import time

import pytest
import requests

from connectors import services
from connectors.base import RunRef, RunSpec, Secrets
from connectors.errors import (
    AuthError,
    ConfigurationError,
    DispatchUnconfirmed,
    RateLimited,
)
from connectors.http import HttpClient
from connectors.models import HealthStatus, ProviderConfig
from connectors.providers.github_actions import adapter as github_actions
from connectors.providers.github_actions.adapter import GitHubActionsAdapter
from connectors.providers.github_actions.simulator import GitHubActionsSimulator
from execution import dispatch as dispatch_module
from execution.dispatch import dispatch_run
from execution.models import Run, RunEvent
from execution.reconciler import reconcile_sweep
from tests.factories import RunFactory

TOKEN = GitHubActionsSimulator.default_token
SETTINGS = {"owner": "ccdash", "repo": "demo", "workflow": "agent.yml", "ref": "main"}


def make_adapter(sim, **settings) -> GitHubActionsAdapter:
    cleaned = GitHubActionsAdapter.validate_config({**SETTINGS, "baseUrl": sim.url, **settings})
    return GitHubActionsAdapter(settings=cleaned, secrets=Secrets({"token": TOKEN}))


def spec(key: str = "0f3c9a7e5b1d4c2a8e6f0b9d7c5a3e1f", command: str = "echo hi") -> RunSpec:
    return RunSpec(run_id=7, dispatch_key=key, command=command, project_id=1)


def ref_for(result) -> RunRef:
    return RunRef(run_id=7, provider_run_id=result.provider_run_id)


def requests_of(sim, kind: str) -> list[dict]:
    return [entry for entry in sim.request_log() if entry["kind"] == kind]


@pytest.fixture
def adapter(github_sim):
    return make_adapter(github_sim)


@pytest.fixture
def configured(project, github_sim):
    """The project uses GitHub Actions, pointed at the simulator."""
    services.update_config(
        project,
        "github_actions",
        actor="test",
        enabled=True,
        settings={**SETTINGS, "baseUrl": github_sim.url},
    )
    services.write_credentials(project, "github_actions", {"token": TOKEN}, user=None)
    return project


@pytest.fixture
def fast_listing(monkeypatch):
    monkeypatch.setattr(github_actions, "LIST_RETRY_DELAY_S", 0.05)


# -- settings -------------------------------------------------------------------------


def test_the_demo_settings_are_accepted_with_github_defaults():
    cleaned = GitHubActionsAdapter.validate_config(SETTINGS)

    assert cleaned["baseUrl"] == "https://api.github.com"
    assert cleaned["commandInput"] == "command"
    assert cleaned["apiVersion"] == "2022-11-28"


def test_twenty_five_inputs_in_all_are_accepted_and_dispatched(github_sim):
    extra = {f"input{n}": "x" for n in range(23)}  # + the command and the run id

    adapter = make_adapter(github_sim, extraInputs=extra)
    result = adapter.dispatch(spec())

    assert result.provider_run_id
    assert github_sim.stats()["creations"] == 1


def test_more_than_twenty_five_inputs_in_all_are_rejected():
    extra = {f"input{n}": "x" for n in range(24)}

    with pytest.raises(ConfigurationError) as caught:
        GitHubActionsAdapter.validate_config({**SETTINGS, "extraInputs": extra})

    assert "extraInputs" in caught.value.field_errors


def test_extra_inputs_cannot_override_the_command_or_the_run_id():
    extra = {"command": "rm -rf /", "ccdash_run_id": "other"}

    with pytest.raises(ConfigurationError) as caught:
        GitHubActionsAdapter.validate_config({**SETTINGS, "extraInputs": extra})

    assert len(caught.value.field_errors["extraInputs"]) == 2


def test_a_ghes_base_url_keeps_its_api_v3_prefix(monkeypatch, settings):
    sent: list[str] = []

    def fake_request(self, method, path, **kwargs):
        sent.append(self.url(path))
        response = requests.Response()
        response.status_code = 200
        response._content = b'{"id": 7, "status": "queued", "html_url": "https://ghe/x"}'
        return response

    monkeypatch.setattr(HttpClient, "request", fake_request)
    # GitHub Enterprise Server is not a default host: the operator lists it.
    settings.CONNECTORS_ALLOWED_HOSTS = ["ghe.example.com"]
    cleaned = GitHubActionsAdapter.validate_config(
        {**SETTINGS, "baseUrl": "https://ghe.example.com/api/v3/"}
    )
    adapter = GitHubActionsAdapter(settings=cleaned, secrets=Secrets({"token": TOKEN}))

    adapter.poll_status(RunRef(run_id=1, provider_run_id="7"))

    assert sent == ["https://ghe.example.com/api/v3/repos/ccdash/demo/actions/runs/7"]


# -- dispatch (acceptance 1, 2, 4) -------------------------------------------------------


@pytest.mark.django_db
def test_dispatch_run_persists_the_provider_run_id_and_url(configured, github_sim):
    run = RunFactory(project=configured, provider_id="github_actions")

    assert dispatch_run(run.pk) == "dispatched"

    run.refresh_from_db()
    assert run.provider_run_id.isdigit()
    assert run.provider_url == f"{github_sim.url}/ccdash/demo/actions/runs/{run.provider_run_id}"
    api_run = requests.get(
        f"{github_sim.url}/repos/ccdash/demo/actions/runs/{run.provider_run_id}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    ).json()
    assert api_run["display_title"] == f"CCDash {run.dispatch_key}"


def test_the_dispatch_sends_the_command_the_run_id_and_the_extra_inputs(github_sim):
    adapter = make_adapter(github_sim, extraInputs={"team": "core"})
    result = adapter.dispatch(spec(command="make test"))
    github_sim.set_state(result.provider_run_id, "in_progress")

    lines = [entry.text for entry in adapter.fetch_logs(ref_for(result), {}).entries]

    assert any(line.endswith("command: make test\n") for line in lines)
    assert any(line.endswith(f"ccdash_run_id: {spec().dispatch_key}\n") for line in lines)
    assert any(line.endswith("team: core\n") for line in lines)


@pytest.mark.parametrize("legacy_status", [400, 422])
def test_an_older_server_refusing_run_details_gets_one_plain_dispatch_found_by_its_title(
    github_sim, adapter, legacy_status
):
    github_sim.configure(legacy_dispatch_status=legacy_status)

    result = adapter.dispatch(spec())

    assert github_sim.stats()["creations"] == 1
    assert len(requests_of(github_sim, "dispatch")) == 2  # refused, then accepted (204)
    assert requests_of(github_sim, "list_runs")
    status = requests.get(
        f"{github_sim.url}/repos/ccdash/demo/actions/runs/{result.provider_run_id}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=5,
    ).json()
    assert spec().dispatch_key in status["display_title"]
    assert result.provider_url == status["html_url"]


def test_a_204_run_listed_only_after_a_moment_is_found_by_listing_again(
    github_sim, adapter, fast_listing
):
    github_sim.configure(legacy_dispatch_status=422, listing_delay_seconds=0.12)

    result = adapter.dispatch(spec())

    assert result.provider_run_id
    assert len(requests_of(github_sim, "list_runs")) > 1
    assert github_sim.stats()["creations"] == 1


@pytest.mark.django_db
def test_a_204_dispatch_that_cannot_be_correlated_is_sent_once_and_fails_unconfirmed(
    configured, github_sim, fast_listing
):
    # A server that ignores return_run_details (204), and a workflow whose
    # run-name does not carry the correlation input.
    github_sim.configure(ignore_run_details=True)
    github_sim.configure_workflow("agent.yml", run_name="Agent run")
    run = RunFactory(project=configured, provider_id="github_actions")

    assert dispatch_run(run.pk) == "failed"
    reconcile_sweep(force=True)
    dispatch_run(run.pk)

    run.refresh_from_db()
    assert len(requests_of(github_sim, "dispatch")) == 1
    assert github_sim.stats()["creations"] == 1
    assert (run.status, run.status_reason) == ("failed", "dispatch_unconfirmed")
    failed = RunEvent.objects.get(run=run, event_type="status_changed", payload__to="failed")
    assert "run-name: ${{ inputs.ccdash_run_id }}" in failed.text


def test_a_lookup_that_finds_nothing_raises_unconfirmed_after_a_bounded_wait(
    github_sim, adapter, fast_listing
):
    github_sim.configure(legacy_dispatch_status=422, listing_delay_seconds=3600)

    with pytest.raises(DispatchUnconfirmed):
        adapter.dispatch(spec())

    assert len(requests_of(github_sim, "list_runs")) == github_actions.LIST_ATTEMPTS
    assert github_sim.stats()["creations"] == 1


def test_under_api_version_2026_03_10_no_return_run_details_is_sent(github_sim):
    adapter = make_adapter(github_sim, apiVersion="2026-03-10")

    result = adapter.dispatch(spec())

    assert result.provider_run_id
    assert [e["status"] for e in requests_of(github_sim, "dispatch")] == [200]
    assert requests_of(github_sim, "list_runs") == []


def test_the_api_version_header_is_the_configured_one(github_sim, monkeypatch):
    seen = []
    original = HttpClient.request

    def recording(self, method, path, **kwargs):
        seen.append((kwargs.get("headers") or {}).get("X-GitHub-Api-Version"))
        return original(self, method, path, **kwargs)

    monkeypatch.setattr(HttpClient, "request", recording)
    make_adapter(github_sim).dispatch(spec())
    make_adapter(github_sim, apiVersion="2026-03-10").dispatch(spec(key="another-key"))

    assert seen == ["2022-11-28", "2026-03-10"]


def test_the_health_check_warns_when_the_run_name_lacks_the_correlation_input(github_sim):
    github_sim.configure_workflow("agent.yml", run_name="Agent run")

    health = make_adapter(github_sim).check_health()

    assert health.ok
    assert "Warning" in health.message
    assert "run-name: ${{ inputs.ccdash_run_id }}" in health.message


@pytest.mark.django_db
def test_a_dispatch_interrupted_before_our_write_recovers_the_existing_run(
    configured, github_sim, monkeypatch
):
    run = RunFactory(project=configured, provider_id="github_actions")
    store = dispatch_module._store_result
    calls = {"n": 0}

    def crash_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("worker died after the provider created the run")
        return store(*args, **kwargs)

    monkeypatch.setattr(dispatch_module, "_store_result", crash_once)
    with pytest.raises(RuntimeError):
        dispatch_run(run.pk)
    assert Run.objects.get(pk=run.pk).provider_run_id == ""

    assert dispatch_run(run.pk) == "recovered"

    run.refresh_from_db()
    assert github_sim.stats()["creations"] == 1
    assert github_sim.state_of(run.provider_run_id)  # the run the simulator created
    assert RunEvent.objects.filter(run=run, event_type="dispatch_recovered").exists()


def test_recover_dispatch_finds_nothing_for_another_key_even_a_longer_one(github_sim, adapter):
    adapter.dispatch(spec(key="dispatch-key-12"))

    assert adapter.recover_dispatch(spec(key="dispatch-key-1")) is None
    assert adapter.recover_dispatch(spec(key="dispatch-key-12")) is not None


# -- a workflow without the trigger, an unknown workflow (acceptance 2) -------------------


def test_a_workflow_without_workflow_dispatch_fails_dispatch_as_configuration(github_sim):
    adapter = make_adapter(github_sim, workflow="no-trigger.yml")

    with pytest.raises(ConfigurationError) as caught:
        adapter.dispatch(spec())

    assert "no workflow_dispatch trigger" in caught.value.message
    assert github_sim.stats()["creations"] == 0


def test_a_workflow_without_workflow_dispatch_fails_the_health_check(github_sim):
    health = make_adapter(github_sim, workflow="no-trigger.yml").check_health()

    assert not health.ok
    assert "no-trigger.yml has no workflow_dispatch trigger" in health.message


@pytest.mark.django_db
def test_dispatching_to_a_workflow_without_the_trigger_marks_the_config_failing(
    configured, github_sim
):
    services.update_config(
        configured,
        "github_actions",
        actor="test",
        settings={**SETTINGS, "baseUrl": github_sim.url, "workflow": "no-trigger.yml"},
    )
    run = RunFactory(project=configured, provider_id="github_actions")

    assert dispatch_run(run.pk) == "failed"

    config = ProviderConfig.objects.get(project=configured, provider_id="github_actions")
    assert config.health_status == HealthStatus.FAILING
    assert "workflow_dispatch" in config.health_message


def test_an_unknown_workflow_is_a_configuration_error_and_unhealthy(github_sim):
    adapter = make_adapter(github_sim, workflow="missing.yml")

    with pytest.raises(ConfigurationError):
        adapter.dispatch(spec())
    health = adapter.check_health()

    assert not health.ok
    assert "missing.yml not found" in health.message


def test_a_dispatchable_workflow_is_healthy(adapter):
    health = adapter.check_health()

    assert health.ok, health.message
    assert "workflow_dispatch" in health.message


# -- status ------------------------------------------------------------------------------


def test_a_run_moves_through_the_native_states_to_succeeded(github_sim, adapter):
    ref = ref_for(adapter.dispatch(spec()))
    seen = []
    for native in ("requested", "queued", "pending", "waiting", "in_progress", "success"):
        github_sim.set_state(ref.provider_run_id, native)
        state = adapter.poll_status(ref)
        seen.append((state.provider_status_raw, state.status))

    assert seen == [
        ("requested", "queued"),
        ("queued", "queued"),
        ("pending", "queued"),
        ("waiting", "waiting"),
        ("in_progress", "running"),
        ("completed/success", "succeeded"),
    ]
    assert state.provider_url.endswith(f"/actions/runs/{ref.provider_run_id}")


@pytest.mark.parametrize(
    ("conclusion", "expected"),
    [
        ("success", "succeeded"),
        ("neutral", "succeeded"),
        ("failure", "failed"),
        ("timed_out", "failed"),
        ("startup_failure", "failed"),
        ("action_required", "failed"),
        ("stale", "failed"),
        ("cancelled", "canceled"),
        ("skipped", "canceled"),
    ],
)
def test_each_conclusion_maps_to_a_finished_status(github_sim, adapter, conclusion, expected):
    (run_id,) = github_sim.seed(1, conclusion)

    state = adapter.poll_status(RunRef(run_id=1, provider_run_id=run_id))

    assert (state.provider_status_raw, state.status) == (f"completed/{conclusion}", expected)


@pytest.mark.off_contract  # an undocumented status, on purpose
def test_an_unknown_native_status_maps_to_none_and_keeps_the_raw_value(github_sim, adapter):
    (run_id,) = github_sim.seed(1, "in_progress")
    github_sim.set_state(run_id, "mystery_state")

    state = adapter.poll_status(RunRef(run_id=1, provider_run_id=run_id))

    assert state.status is None
    assert state.provider_status_raw == "mystery_state"
    assert GitHubActionsAdapter.map_status("completed/mystery_conclusion") is None


# -- logs --------------------------------------------------------------------------------


def test_logs_arrive_across_many_polls_with_no_line_twice_and_none_missing(github_sim, adapter):
    ref = ref_for(adapter.dispatch(spec(command="agent [sim:hold]")))
    github_sim.set_state(ref.provider_run_id, "in_progress")
    collected, cursor, polls_with_output = [], {}, 0
    for _ in range(12):
        batch = adapter.fetch_logs(ref, cursor)
        collected += [entry.text for entry in batch.entries]
        polls_with_output += bool(batch.entries)
        cursor = batch.cursor
        time.sleep(0.1)
    github_sim.set_state(ref.provider_run_id, "success")
    collected += [entry.text for entry in adapter.fetch_logs(ref, cursor).entries]

    everything = [entry.text for entry in adapter.fetch_logs(ref, {}).entries]
    assert collected == everything
    assert len(set(collected)) == len(collected)
    assert polls_with_output >= 3
    assert everything[-1].endswith("Job finished with conclusion success\n")


def test_log_entries_are_stdout_of_their_job(github_sim, adapter):
    ref = ref_for(adapter.dispatch(spec()))
    github_sim.set_state(ref.provider_run_id, "in_progress")

    batch = adapter.fetch_logs(ref, {})

    assert batch.entries
    assert {(entry.stream, entry.payload["job"]) for entry in batch.entries} == {
        ("stdout", "agent")
    }
    assert sorted(batch.cursor) == ["complete", "jobs"]


def test_a_partial_last_line_waits_until_the_job_completes(github_sim, adapter, monkeypatch):
    ref = ref_for(adapter.dispatch(spec(command="agent [sim:hold]")))
    github_sim.set_state(ref.provider_run_id, "in_progress")
    monkeypatch.setattr(GitHubActionsAdapter, "_job_log", lambda self, job_id: ("one\ntw", False))

    running = adapter.fetch_logs(ref, {})
    github_sim.set_state(ref.provider_run_id, "success")
    completed = adapter.fetch_logs(ref, running.cursor)

    assert [entry.text for entry in running.entries] == ["one\n"]
    assert [entry.text for entry in completed.entries] == ["tw"]


def test_a_queued_run_has_no_logs_yet(github_sim, adapter):
    (run_id,) = github_sim.seed(1, "queued")

    batch = adapter.fetch_logs(RunRef(run_id=1, provider_run_id=run_id), {})

    assert batch.entries == ()


def test_the_signed_log_url_is_fetched_without_the_token(github_sim, adapter, monkeypatch):
    ref = ref_for(adapter.dispatch(spec()))
    github_sim.set_state(ref.provider_run_id, "in_progress")
    sent = []
    original = requests.Session.request

    def recording(session, method, url, **kwargs):
        headers = {**session.headers, **(kwargs.get("headers") or {})}
        sent.append((url, "Authorization" in headers, kwargs.get("allow_redirects")))
        return original(session, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", recording)

    assert adapter.fetch_logs(ref, {}).entries

    (blob,) = [entry for entry in sent if "/_blob/" in entry[0]]
    assert blob[1] is False
    (api,) = [entry for entry in sent if entry[0].endswith("/logs")]
    assert api[1:] == (True, False)  # redirect not followed with the token attached


# -- cancel ------------------------------------------------------------------------------


def test_cancel_ends_canceled(github_sim, adapter):
    ref = ref_for(adapter.dispatch(spec(command="agent [sim:hold]")))
    github_sim.set_state(ref.provider_run_id, "in_progress")

    result = adapter.cancel(ref)
    deadline = time.monotonic() + 3
    while (state := adapter.poll_status(ref)).status != "canceled" and time.monotonic() < deadline:
        time.sleep(0.05)

    assert result.confirmed is False  # GitHub cancels asynchronously (202)
    assert (state.provider_status_raw, state.status) == ("completed/cancelled", "canceled")


def test_cancel_on_a_run_that_succeeded_is_over_but_not_accepted(github_sim, adapter):
    (run_id,) = github_sim.seed(1, "success")

    result = adapter.cancel(RunRef(run_id=1, provider_run_id=run_id))

    assert (result.confirmed, result.accepted) == (True, False)
    assert result.provider_status_raw == "completed/success"
    assert [e["status"] for e in requests_of(github_sim, "cancel")] == [409]


def test_cancel_on_a_run_already_cancelled_is_confirmed(github_sim, adapter):
    (run_id,) = github_sim.seed(1, "cancelled")

    result = adapter.cancel(RunRef(run_id=1, provider_run_id=run_id))

    assert result.confirmed is True
    assert result.provider_status_raw == "completed/cancelled"
    assert [e["status"] for e in requests_of(github_sim, "cancel")] == [409]


# -- rate limits (acceptance 3) -------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 403])
def test_after_a_rate_limit_no_request_reaches_github_before_it_allows(github_sim, adapter, status):
    github_sim.configure(rate_limit_status=status)
    (run_id,) = github_sim.seed(1, "in_progress")
    ref = RunRef(run_id=1, provider_run_id=run_id)
    # 403 carries only a whole-second reset epoch: 2 s keeps the wait at least 1 s.
    wait = 1 if status == 429 else 2
    github_sim.rate_limit_next(1, retry_after=wait)

    with pytest.raises(RateLimited) as caught:
        adapter.poll_status(ref)
    refusals = 0
    while True:
        try:
            state = adapter.poll_status(ref)
            break
        except RateLimited:
            refusals += 1
            time.sleep(0.05)

    assert caught.value.retry_after > 0
    assert refusals > 0 and state.status == "running"
    first, second = requests_of(github_sim, "get_run")  # nothing in between reached it
    assert first["status"] == status
    allowed_at = first["time"] + wait if status == 429 else int(first["time"]) + wait
    assert second["time"] >= allowed_at - 0.01


# -- health and credentials (acceptance 5) ------------------------------------------------


def test_a_revoked_token_fails_health_and_polling_without_showing_the_secret(github_sim, adapter):
    (run_id,) = github_sim.seed(1, "in_progress")
    github_sim.revoke_tokens()

    health = adapter.check_health()
    with pytest.raises(AuthError) as caught:
        adapter.poll_status(RunRef(run_id=1, provider_run_id=run_id))

    assert not health.ok
    assert "refused the token" in health.message
    assert "Bad credentials" in caught.value.message
    assert TOKEN not in health.message + caught.value.message


def test_an_outage_fails_the_health_check_instead_of_raising(github_sim, adapter):
    github_sim.fail_next(1, 503)

    health = adapter.check_health()

    assert not health.ok
    assert "503" in health.message
