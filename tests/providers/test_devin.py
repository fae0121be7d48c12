"""The Devin v1 adapter against the Devin simulator: dispatch and recovery,
native states, messages as logs, cancel, rate limits, revoked keys and
unknown statuses."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from connectors.base import RunRef, RunSpec, Secrets
from connectors.errors import AuthError, RateLimited, RunNotFound
from connectors.models import ProviderConfig, ProviderCredential
from connectors.providers.devin.adapter import DevinAdapter, prompt_marker, run_tag
from connectors.providers.devin.simulator import DevinSimulator
from execution import dispatch as dispatch_module
from execution.dispatch import dispatch_run
from execution.models import RunEvent
from execution.services import cancel as cancel_run
from tests.factories import RunFactory
from tests.providers.conftest import ShiftedClock, shift_clock

KEY = DevinSimulator.default_token


@pytest.fixture
def clock(devin_sim, monkeypatch) -> ShiftedClock:
    return shift_clock(devin_sim, monkeypatch)


@pytest.fixture
def adapter(devin_sim) -> DevinAdapter:
    settings = DevinAdapter.validate_config({"baseUrl": devin_sim.url})
    return DevinAdapter(settings=settings, secrets=Secrets({"apiKey": KEY}))


@pytest.fixture
def devin_ready(project, devin_sim):
    """The project's Devin config pointing at the simulator, enabled, with a key."""
    config = ProviderConfig.objects.create(
        project=project,
        provider_id="devin",
        enabled=True,
        settings=DevinAdapter.validate_config({"baseUrl": devin_sim.url}),
    )
    credential = ProviderCredential(config=config)
    credential.values = {"apiKey": KEY}
    credential.save()
    return config


def spec(command: str = "Fix the flaky test", key: str | None = None) -> RunSpec:
    return RunSpec(run_id=7, dispatch_key=key or uuid.uuid4().hex, command=command, project_id=1)


def dispatched(adapter: DevinAdapter, command: str = "Fix the flaky test [sim:hold]") -> RunRef:
    run_spec = spec(command)
    result = adapter.dispatch(run_spec)
    return RunRef(7, result.provider_run_id, run_spec.dispatch_key)


# -- dispatch and recovery ----------------------------------------------------------------


@pytest.mark.django_db
def test_dispatch_run_persists_the_session_id_and_url(project, devin_ready, devin_sim, adapter):
    run = RunFactory(project=project, provider_id="devin", command="echo hi")

    assert dispatch_run(run.pk) == "dispatched"

    run.refresh_from_db()
    assert run.provider_run_id.startswith("devin-")
    assert run.provider_url == f"{devin_sim.url}/sessions/{run.provider_run_id[6:]}"
    assert devin_sim.stats()["creations"] == 1
    ref = RunRef(run.pk, run.provider_run_id, run.dispatch_key)
    state = adapter.poll_status_with_logs(ref, {})
    first_message = state.logs.entries[0].text
    assert first_message == f"echo hi\n\n{prompt_marker(run.dispatch_key)}\n"


def test_the_session_is_tagged_and_titled_with_the_dispatch_key(adapter, devin_sim):
    run_spec = spec()
    adapter.dispatch(run_spec)

    (listed,) = adapter.http.request(
        "GET", "/v1/sessions", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    ).json()["sessions"]
    assert listed["tags"] == ["ccdash", run_tag(run_spec.dispatch_key)]
    assert run_spec.dispatch_key in listed["title"]


@pytest.mark.django_db
def test_an_interrupted_dispatch_recovers_the_existing_session(
    project, devin_ready, devin_sim, monkeypatch
):
    run = RunFactory(project=project, provider_id="devin", command="echo hi")
    store = dispatch_module._store_result
    crashes = []

    def crash_once(*args, **kwargs):
        if not crashes:
            crashes.append(1)
            raise RuntimeError("worker died before the database write")
        return store(*args, **kwargs)

    monkeypatch.setattr(dispatch_module, "_store_result", crash_once)
    with pytest.raises(RuntimeError):
        dispatch_run(run.pk)
    run.refresh_from_db()
    assert run.provider_run_id == ""

    assert dispatch_run(run.pk) == "recovered"

    run.refresh_from_db()
    assert devin_sim.stats()["creations"] == 1
    assert devin_sim.stats()["requests"]["list_sessions"] == 1
    assert run.provider_run_id.startswith("devin-")
    assert RunEvent.objects.filter(run=run, event_type="dispatch_recovered").count() == 1


def test_a_resent_create_returns_the_existing_session(adapter, devin_sim):
    run_spec = spec()

    first, again = adapter.dispatch(run_spec), adapter.dispatch(run_spec)

    assert again.provider_run_id == first.provider_run_id
    assert again.provider_state["isNewSession"] is False
    assert devin_sim.stats()["creations"] == 1


def test_two_runs_of_the_same_command_get_two_sessions(adapter, devin_sim):
    first, second = adapter.dispatch(spec("same")), adapter.dispatch(spec("same"))

    assert first.provider_run_id != second.provider_run_id
    assert devin_sim.stats()["creations"] == 2


def test_recover_finds_nothing_for_a_key_never_dispatched(adapter, devin_sim):
    adapter.dispatch(spec())

    assert adapter.recover_dispatch(spec()) is None
    assert devin_sim.stats()["creations"] == 1


# -- states ------------------------------------------------------------------------------------


def test_a_session_moves_through_its_native_states_to_succeeded(adapter, devin_sim):
    ref = dispatched(adapter)
    running = adapter.poll_status(ref)
    devin_sim.advance(ref.provider_run_id)

    finished = adapter.poll_status(ref)

    assert (running.provider_status_raw, running.status) == ("working", "running")
    assert (finished.provider_status_raw, finished.status) == ("finished", "succeeded")
    assert finished.provider_url.endswith(ref.provider_run_id[6:])


def test_a_blocked_session_is_waiting_then_continues(adapter, devin_sim):
    ref = dispatched(adapter, "Ask me first [sim:block]")
    statuses = [adapter.poll_status(ref).status]
    for _ in range(3):
        devin_sim.advance(ref.provider_run_id)
        statuses.append(adapter.poll_status(ref).status)

    assert statuses == ["running", "waiting", "running", "succeeded"]


@pytest.mark.parametrize(
    "native",
    [
        "resumed",
        "suspend_requested",
        "suspend_requested_frontend",
        "resume_requested",
        "resume_requested_frontend",
    ],
)
def test_suspend_and_resume_states_read_as_running(adapter, devin_sim, native):
    ref = dispatched(adapter)
    devin_sim.set_state(ref.provider_run_id, native)

    assert adapter.poll_status(ref).status == "running"


@pytest.mark.off_contract  # an undocumented status, on purpose
def test_an_unknown_status_maps_to_none_and_keeps_the_raw_value(adapter, devin_sim):
    ref = dispatched(adapter)
    devin_sim.set_state(ref.provider_run_id, "mystery_state")

    state = adapter.poll_status(ref)

    assert (state.status, state.provider_status_raw) == (None, "mystery_state")


def test_a_vanished_session_raises_run_not_found(adapter, devin_sim):
    ref = dispatched(adapter)
    devin_sim.vanish(ref.provider_run_id)

    with pytest.raises(RunNotFound):
        adapter.poll_status(ref)


# -- messages as logs ------------------------------------------------------------------------


def test_messages_arrive_across_many_polls_without_duplicates_or_gaps(adapter, devin_sim, clock):
    ref = dispatched(adapter, "Refactor the parser [sim:slow]")
    collected, cursor, polls = [], {}, 0
    status = "running"
    while status == "running" and polls < 100:
        clock.skip(0.7)
        polls += 1
        # As the reconciler does: the poll's own messages, then sometimes fetch_logs.
        state = adapter.poll_status_with_logs(ref, cursor)
        status = state.status
        if state.logs is not None:
            collected += state.logs.entries
            cursor = dict(state.logs.cursor)
        if polls % 3 == 0:
            batch = adapter.fetch_logs(ref, cursor)
            collected += batch.entries
            cursor = dict(batch.cursor)
    collected += adapter.fetch_logs(ref, cursor).entries

    everything = adapter.fetch_logs(ref, {}).entries
    assert status == "succeeded" and polls > 20
    assert [e.payload.get("eventId") for e in collected] == [
        e.payload.get("eventId") for e in everything
    ]
    assert len(everything) > 20
    assert [e.stream for e in everything].count("stdout") == len(everything) - 2
    assert everything[-1].text.startswith("Pull request: ")
    assert adapter.fetch_logs(ref, cursor).entries == ()


def test_logs_fall_back_to_the_message_count_when_the_last_id_is_unknown(adapter, devin_sim, clock):
    ref = dispatched(adapter)
    clock.skip(3.5)

    batch = adapter.fetch_logs(ref, {"seen": 2, "lastEventId": "not-a-message-id"})

    everything = adapter.fetch_logs(ref, {}).entries
    assert batch.entries == everything[2:]
    assert batch.cursor["seen"] == len(everything)


# -- cancel ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_ends_the_run_canceled(
    project, operator, devin_ready, devin_sim, adapter, django_capture_on_commit_callbacks
):
    run = RunFactory(project=project, provider_id="devin", command="echo hi [sim:hold]")
    dispatch_run(run.pk)
    run.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        cancel_run(run, operator)

    run.refresh_from_db()
    assert run.status == "canceled"
    assert devin_sim.state_of(run.provider_run_id) == "expired"
    assert run.provider_status_raw == "expired"
    # Devin now reports the session expired; the run, already canceled, stays so.
    assert adapter.poll_status(RunRef(run.pk, run.provider_run_id)).status == "failed"


def test_cancel_of_a_working_session_is_confirmed(adapter, devin_sim):
    ref = dispatched(adapter)

    result = adapter.cancel(ref)

    assert result.confirmed
    assert result.provider_status_raw == "expired"


def test_cancel_on_a_finished_session_raises_nothing_and_is_not_accepted(adapter, devin_sim):
    ref = dispatched(adapter)
    devin_sim.advance(ref.provider_run_id)

    result = adapter.cancel(ref)

    assert (result.confirmed, result.accepted) == (True, False)
    assert result.provider_status_raw == "finished"
    assert devin_sim.stats()["requests"]["terminate_session"] == 1


def test_cancel_when_termination_ends_in_an_undocumented_status_is_still_confirmed(
    adapter, devin_sim
):
    devin_sim.configure(terminated_status_enum="stopped")
    ref = dispatched(adapter)

    result = adapter.cancel(ref)

    assert (result.confirmed, result.provider_status_raw) == (True, "stopped")
    assert adapter.poll_status(ref).status is None


def test_cancel_of_an_unknown_session_raises_run_not_found(adapter, devin_sim):
    with pytest.raises(RunNotFound):
        adapter.cancel(RunRef(7, "devin-does-not-exist"))


# -- rate limits, auth, health ------------------------------------------------------------------


def test_after_a_429_no_request_reaches_devin_before_retry_after(adapter, devin_sim):
    ref = dispatched(adapter)
    devin_sim.rate_limit_next(1, retry_after=1)
    with pytest.raises(RateLimited) as limited:
        adapter.poll_status(ref)
    assert limited.value.retry_after == 1.0
    sent_before = len(devin_sim.request_log())

    refused = 0
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            adapter.poll_status(ref)
            break
        except RateLimited:
            refused += 1
            time.sleep(0.05)

    log = devin_sim.request_log()
    assert refused > 0
    assert len(log) == sent_before + 1  # the refused polls never left the process
    rate_limited, after = log[-2], log[-1]
    assert rate_limited["status"] == 429 and after["status"] == 200
    assert after["time"] - rate_limited["time"] >= 1.0


def test_a_revoked_key_fails_health_and_polls_without_showing_the_key(adapter, devin_sim):
    ref = dispatched(adapter)
    devin_sim.revoke_tokens()

    health = adapter.check_health()
    with pytest.raises(AuthError) as rejected:
        adapter.poll_status(ref)

    assert not health.ok
    assert "API key rejected" in health.message
    assert KEY not in health.message and KEY not in str(rejected.value)


def test_health_is_ok_with_an_accepted_key(adapter, devin_sim):
    health = adapter.check_health()

    assert health.ok
    assert devin_sim.stats()["requests"]["list_sessions"] == 1


def test_health_fails_when_base_url_is_not_the_devin_api(devin_sim):
    settings = DevinAdapter.validate_config({"baseUrl": f"{devin_sim.url}/elsewhere"})
    health = DevinAdapter(settings=settings, secrets=Secrets({"apiKey": KEY})).check_health()

    assert not health.ok
    assert "baseUrl" in health.message


def test_health_without_an_api_key_says_so():
    health = DevinAdapter(settings={}, secrets=Secrets({})).check_health()

    assert not health.ok
    assert "API key" in health.message


def test_extra_tags_setting_is_validated_and_sent(devin_sim):
    settings = DevinAdapter.validate_config({"baseUrl": devin_sim.url, "tags": "team-a, nightly"})
    adapter = DevinAdapter(settings=settings, secrets=Secrets({"apiKey": KEY}))
    run_spec = spec()

    adapter.dispatch(run_spec)

    assert adapter.recover_dispatch(run_spec) is not None
    listing = adapter.http.request(
        "GET", "/v1/sessions", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    ).json()
    assert listing["sessions"][0]["tags"][-2:] == ["team-a", "nightly"]


# -- links ------------------------------------------------------------------------------------


def test_session_objects_have_no_url_yet_polled_and_recovered_runs_keep_a_link(adapter, devin_sim):
    run_spec = spec()
    created = adapter.dispatch(run_spec)
    ref = RunRef(7, created.provider_run_id, run_spec.dispatch_key)

    polled = adapter.poll_status(ref)
    recovered = adapter.recover_dispatch(run_spec)

    session = requests.get(
        f"{devin_sim.url}/v1/sessions/{created.provider_run_id}",
        headers={"Authorization": f"Bearer {devin_sim.default_token}"},
        timeout=5,
    ).json()
    assert "url" not in session
    assert created.provider_url  # the create answer's url, kept
    assert polled.provider_url == created.provider_url
    assert recovered is not None and recovered.provider_url == created.provider_url


def test_the_public_api_links_to_devins_web_app():
    adapter = DevinAdapter(DevinAdapter.validate_config({}), Secrets({"apiKey": "k"}))

    assert adapter.session_url("devin-abc123") == "https://app.devin.ai/sessions/abc123"
