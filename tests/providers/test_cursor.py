"""The Cursor Cloud Agents v1 adapter against the Cursor simulator: dispatch
and recovery by branch name, native states, the SSE stream as logs, cancel,
rate limits, revoked keys and unknown statuses."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import urllib3

from connectors.base import RunRef, RunSpec, Secrets
from connectors.errors import (
    AuthError,
    ConfigurationError,
    RateLimited,
    RunNotFound,
    TransientError,
)
from connectors.models import ProviderConfig, ProviderCredential
from connectors.providers.cursor import adapter as cursor_module
from connectors.providers.cursor.adapter import CursorAdapter
from connectors.providers.cursor.simulator import CursorSimulator
from connectors.sse import SseEvent, SseParser, read_events
from execution import dispatch as dispatch_module
from execution.dispatch import dispatch_run
from execution.models import RunEvent
from execution.services import cancel as cancel_run
from tests.factories import RunFactory
from tests.providers.conftest import ShiftedClock, shift_clock

KEY = CursorSimulator.default_token
REPOSITORY = "https://github.com/ccdash/demo"


@pytest.fixture
def clock(cursor_sim, monkeypatch) -> ShiftedClock:
    return shift_clock(cursor_sim, monkeypatch)


@pytest.fixture
def short_streams(cursor_sim):
    """Streams of running runs close after 0.2 s (Cursor closes them after a
    while too), so a test can poll many times quickly."""
    cursor_sim.configure(stream_max_seconds=0.2)


def make_adapter(sim: CursorSimulator, **settings) -> CursorAdapter:
    cleaned = CursorAdapter.validate_config(
        {"baseUrl": sim.url, "repository": REPOSITORY, **settings}
    )
    return CursorAdapter(settings=cleaned, secrets=Secrets({"apiKey": KEY}))


@pytest.fixture
def adapter(cursor_sim) -> CursorAdapter:
    return make_adapter(cursor_sim)


@pytest.fixture
def cursor_ready(project, cursor_sim):
    """The project's Cursor config pointing at the simulator, enabled, with a key."""
    config = ProviderConfig.objects.create(
        project=project,
        provider_id="cursor",
        enabled=True,
        settings=CursorAdapter.validate_config(
            {"baseUrl": cursor_sim.url, "repository": REPOSITORY}
        ),
    )
    credential = ProviderCredential(config=config)
    credential.values = {"apiKey": KEY}
    credential.save()
    return config


def spec(
    command: str = "Fix the flaky test", key: str | None = None, created_at: float | None = None
) -> RunSpec:
    return RunSpec(
        run_id=7,
        dispatch_key=key or uuid.uuid4().hex,
        command=command,
        project_id=1,
        created_at=created_at,
    )


def dispatched(adapter: CursorAdapter, command: str = "Fix the flaky test [sim:hold]") -> RunRef:
    run_spec = spec(command)
    result = adapter.dispatch(run_spec)
    return RunRef(7, result.provider_run_id, run_spec.dispatch_key, result.provider_state)


def agent_json(sim: CursorSimulator, agent_id: str) -> dict:
    return requests.get(f"{sim.url}/v1/agents/{agent_id}", auth=(KEY, ""), timeout=5).json()


# -- dispatch and recovery ----------------------------------------------------------------


@pytest.mark.django_db
def test_dispatch_run_persists_the_run_id_agent_url_and_agent_id(project, cursor_ready, cursor_sim):
    run = RunFactory(project=project, provider_id="cursor", command="echo hi")

    assert dispatch_run(run.pk) == "dispatched"

    run.refresh_from_db()
    agent_id = run.provider_state["agentId"]
    assert run.provider_run_id.startswith("run-")
    assert run.provider_url == f"{cursor_sim.url}/agents/{agent_id}"
    assert run.provider_status_raw == "CREATING"
    assert run.provider_state["branchName"] == f"ccdash/{run.dispatch_key}"
    assert cursor_sim.stats()["creations"] == 1


def test_the_agent_gets_the_configured_repository_ref_branch_model_and_pr_setting(cursor_sim):
    adapter = make_adapter(
        cursor_sim,
        startingRef="develop",
        model="claude-4-sonnet-thinking",
        autoCreatePr=True,
        branchPrefix="agents/",
    )
    run_spec = spec()

    result = adapter.dispatch(run_spec)

    agent = agent_json(cursor_sim, result.provider_state["agentId"])
    assert agent["repos"] == [{"url": REPOSITORY, "startingRef": "develop"}]
    assert agent["branchName"] == f"agents/{run_spec.dispatch_key}"
    assert agent["model"] == {"id": "claude-4-sonnet-thinking"}
    assert agent["autoCreatePR"] is True


def test_without_a_model_setting_cursor_picks_its_default(adapter, cursor_sim):
    result = adapter.dispatch(spec())

    assert agent_json(cursor_sim, result.provider_state["agentId"])["model"] is None


def test_settings_need_a_repository_url_and_a_branch_safe_prefix():
    with pytest.raises(ConfigurationError) as caught:
        CursorAdapter.validate_config({"repository": "not a url", "branchPrefix": "my runs/"})

    assert set(caught.value.field_errors) == {"repository", "branchPrefix"}


@pytest.mark.django_db
def test_an_interrupted_dispatch_recovers_the_existing_agent(
    project, cursor_ready, cursor_sim, monkeypatch
):
    run = RunFactory(project=project, provider_id="cursor", command="echo hi")
    store = dispatch_module._store_result
    created = []

    def crash_once(run_, adapter_, result, recovered):
        if not created:
            created.append(result)
            raise RuntimeError("worker died before the database write")
        return store(run_, adapter_, result, recovered)

    monkeypatch.setattr(dispatch_module, "_store_result", crash_once)
    with pytest.raises(RuntimeError):
        dispatch_run(run.pk)
    run.refresh_from_db()
    assert run.provider_run_id == ""

    assert dispatch_run(run.pk) == "recovered"

    run.refresh_from_db()
    assert cursor_sim.stats()["creations"] == 1
    assert run.provider_run_id == created[0].provider_run_id
    assert run.provider_state["agentId"] == created[0].provider_state["agentId"]
    assert run.provider_url == created[0].provider_url
    assert RunEvent.objects.filter(run=run, event_type="dispatch_recovered").count() == 1


def test_recovery_follows_next_cursor_through_newer_agents(adapter, cursor_sim, monkeypatch):
    monkeypatch.setattr(cursor_module, "RECOVERY_PAGE_SIZE", 10)
    run_spec = spec(created_at=time.time())
    created = adapter.dispatch(run_spec)
    cursor_sim.seed(15, "running")  # newer agents push ours to the second page

    recovered = adapter.recover_dispatch(run_spec)

    assert recovered is not None
    assert recovered.provider_run_id == created.provider_run_id
    assert recovered.provider_state == created.provider_state
    assert cursor_sim.stats()["requests"]["list_agents"] == 2
    assert cursor_sim.stats()["requests"]["get_agent"] == 16  # the newest 16, ours last


def test_recovery_reads_full_agents_because_list_items_have_no_branch(adapter, cursor_sim):
    run_spec = spec(created_at=time.time())
    created = adapter.dispatch(run_spec)

    listed = requests.get(
        f"{cursor_sim.url}/v1/agents", auth=(CursorSimulator.default_token, ""), timeout=5
    ).json()["items"]
    recovered = adapter.recover_dispatch(run_spec)

    assert set(listed[0]) == {
        "id",
        "name",
        "status",
        "env",
        "url",
        "createdAt",
        "updatedAt",
        "latestRunId",
    }
    assert recovered is not None
    assert recovered.provider_run_id == created.provider_run_id


def test_recovery_reads_no_agent_created_before_the_dispatch_key(adapter, cursor_sim, clock):
    cursor_sim.seed(5, "running")
    clock.skip(3600)

    assert adapter.recover_dispatch(spec(created_at=time.time() + 3600)) is None
    assert cursor_sim.stats()["requests"].get("get_agent", 0) == 0


def test_recovery_reads_a_bounded_number_of_agents(adapter, cursor_sim):
    cursor_sim.seed(cursor_module.RECOVERY_MAX_READS + 10, "running")

    assert adapter.recover_dispatch(spec(created_at=time.time() - 60)) is None
    assert cursor_sim.stats()["requests"]["get_agent"] == cursor_module.RECOVERY_MAX_READS


def test_recovery_finds_nothing_for_a_key_never_dispatched(adapter, cursor_sim):
    adapter.dispatch(spec())

    assert adapter.recover_dispatch(spec()) is None
    assert cursor_sim.stats()["creations"] == 1


# -- states ------------------------------------------------------------------------------------


def test_a_run_moves_through_its_native_states_to_succeeded(adapter, cursor_sim):
    ref = dispatched(adapter)
    seen = [adapter.poll_status(ref)]
    for _ in range(2):
        cursor_sim.advance(ref.provider_run_id)
        seen.append(adapter.poll_status(ref))

    assert [(s.provider_status_raw, s.status) for s in seen] == [
        ("CREATING", "queued"),
        ("RUNNING", "running"),
        ("FINISHED", "succeeded"),
    ]


@pytest.mark.parametrize(
    ("native", "canonical"),
    [("ERROR", "failed"), ("EXPIRED", "failed"), ("CANCELLED", "canceled")],
)
def test_the_other_terminal_states_map(adapter, cursor_sim, native, canonical):
    ref = dispatched(adapter)
    cursor_sim.set_state(ref.provider_run_id, native)

    assert adapter.poll_status(ref).status == canonical


@pytest.mark.off_contract  # an undocumented status, on purpose
def test_an_unknown_status_maps_to_none_and_keeps_the_raw_value(adapter, cursor_sim):
    ref = dispatched(adapter)
    cursor_sim.set_state(ref.provider_run_id, "mystery_state")

    state = adapter.poll_status(ref)

    assert (state.status, state.provider_status_raw) == (None, "mystery_state")


def test_a_vanished_run_raises_run_not_found(adapter, cursor_sim):
    ref = dispatched(adapter)
    cursor_sim.vanish(ref.provider_run_id)

    with pytest.raises(RunNotFound):
        adapter.poll_status(ref)


# -- the stream as logs ---------------------------------------------------------------------------


def test_stream_events_arrive_across_many_polls_without_duplicates_or_gaps(
    adapter, cursor_sim, clock, short_streams
):
    ref = dispatched(adapter, "Refactor the parser [sim:hold]")
    collected, cursor, polls, growing = [], {}, 0, 0
    for _ in range(14):
        clock.skip(0.7)
        batch = adapter.fetch_logs(ref, cursor)
        polls += 1
        growing += bool(batch.entries)
        collected += batch.entries
        cursor = json.loads(json.dumps(batch.cursor))  # stored as JSON between polls
    cursor_sim.advance(ref.provider_run_id)
    while not cursor.get("done") and polls < 40:
        batch = adapter.fetch_logs(ref, cursor)
        polls += 1
        collected += batch.entries
        cursor = dict(batch.cursor)

    everything = adapter.fetch_logs(ref, {}).entries
    ids = [e.payload["eventId"] for e in collected]
    assert ids == [e.payload["eventId"] for e in everything]
    assert len(set(ids)) == len(ids) > 15
    assert growing >= 10  # output came in pieces while the run was running
    assert collected[0].text == "Status: CREATING\n"
    assert "Tool call: run_terminal_cmd" in " ".join(e.text for e in collected)
    assert collected[-1].text.startswith("Done: Refactor the parser")
    assert all(e.stream == "provider" for e in collected)


def test_thinking_heartbeats_and_done_are_not_log_lines(adapter, cursor_sim, clock):
    ref = dispatched(adapter)
    cursor_sim.advance(ref.provider_run_id)
    clock.skip(2.0)
    cursor_sim.advance(ref.provider_run_id)

    batch = adapter.fetch_logs(ref, {})

    kinds = {e.payload["event"] for e in batch.entries}
    assert kinds == {"status", "assistant", "tool_call", "result"}
    assert batch.cursor["done"] is True


def test_a_stream_resumes_after_last_event_id(adapter, cursor_sim, clock):
    ref = dispatched(adapter)
    cursor_sim.advance(ref.provider_run_id)
    clock.skip(2.0)
    cursor_sim.advance(ref.provider_run_id)
    everything = adapter.fetch_logs(ref, {}).entries

    resumed = adapter.fetch_logs(ref, {"lastEventId": "3"})

    assert resumed.entries[0].payload["eventId"] == "4"
    assert resumed.entries == tuple(e for e in everything if int(e.payload["eventId"]) > 3)


def test_a_stream_kept_open_with_heartbeats_does_not_hold_the_poller(adapter, cursor_sim):
    cursor_sim.configure(stream_max_seconds=30)
    ref = dispatched(adapter)
    cursor_sim.set_state(ref.provider_run_id, "CREATING")  # nothing new to say, for 30 s
    started = time.monotonic()

    first = adapter.fetch_logs(ref, {})
    second = adapter.fetch_logs(ref, first.cursor)

    assert time.monotonic() - started < 3.0
    assert [e.text for e in first.entries] == ["Status: CREATING\n", "Status: CREATING\n"]
    assert second.entries == ()
    assert second.cursor == first.cursor


def test_an_expired_stream_gives_nothing_and_is_not_asked_again(adapter, cursor_sim):
    cursor_sim.configure(stream_retention_seconds=0)
    ref = dispatched(adapter)
    cursor_sim.set_state(ref.provider_run_id, "FINISHED")

    batch = adapter.fetch_logs(ref, {"lastEventId": "2"})
    again = adapter.fetch_logs(ref, batch.cursor)

    assert batch.entries == again.entries == ()
    assert batch.cursor == {"lastEventId": "2", "expired": True}
    assert cursor_sim.stats()["requests"]["stream"] == 1


def test_a_finished_stream_is_not_asked_again(adapter, cursor_sim):
    ref = dispatched(adapter)
    cursor_sim.set_state(ref.provider_run_id, "FINISHED")
    batch = adapter.fetch_logs(ref, {})

    assert adapter.fetch_logs(ref, batch.cursor).entries == ()
    assert cursor_sim.stats()["requests"]["stream"] == 1


def test_the_sse_parser_joins_events_split_anywhere_and_drops_a_cut_off_one():
    raw = (
        b": comment\r\nid: 1\r\nevent: assistant\r\n"
        b'data: {"text":\r\ndata:  "h\xc3\xa9"}\r\n\r\n'
        b"event: heartbeat\ndata: {}\n\nid: 2\nevent: done\n\nid: 3\nevent: assistant\ndata: cut"
    )
    parser, events = SseParser(), []
    for index in range(len(raw)):
        events += parser.feed(raw[index : index + 1])

    assert events == [
        SseEvent("assistant", '{"text":\n "hé"}', "1"),
        SseEvent("heartbeat", "{}", None),
        SseEvent("done", "", "2"),
    ]


class EndlessStream:
    """A ``stream=True`` response whose server never stops talking, then goes silent."""

    def __init__(self, events: int | None = None) -> None:
        self.raw, self.events = self, events

    def read1(self, amount: int, decode_content: bool = True) -> bytes:
        if self.events == 0:
            raise urllib3.exceptions.ReadTimeoutError(None, "/stream", "Read timed out.")
        if self.events is not None:
            self.events -= 1
        time.sleep(0.01)
        return b'event: assistant\ndata: {"text": "more"}\n\n'


def test_reading_a_stream_that_never_ends_stops_at_the_budget():
    started = time.monotonic()

    events = list(read_events(EndlessStream(), budget_s=0.3))

    assert 0.3 <= time.monotonic() - started < 0.6
    assert len(events) > 10


def test_a_silent_stream_ends_the_read_with_the_events_received():
    events = list(read_events(EndlessStream(events=3), budget_s=5))

    assert [e.data for e in events] == ['{"text": "more"}'] * 3


# -- cancel ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_ends_the_run_canceled(
    project, operator, cursor_ready, cursor_sim, adapter, django_capture_on_commit_callbacks
):
    run = RunFactory(project=project, provider_id="cursor", command="echo hi [sim:hold]")
    dispatch_run(run.pk)
    run.refresh_from_db()

    with django_capture_on_commit_callbacks(execute=True):
        cancel_run(run, operator)

    run.refresh_from_db()
    assert run.status == "canceled"  # Cursor's 200 {"id"} confirms the cancel
    assert cursor_sim.stats()["requests"]["cancel"] == 1
    ref = RunRef(run.pk, run.provider_run_id, run.dispatch_key, run.provider_state)
    state = adapter.poll_status(ref)
    assert (state.provider_status_raw, state.status) == ("CANCELLED", "canceled")


def test_cancel_of_a_running_run_is_confirmed_by_the_200_without_a_status(adapter, cursor_sim):
    ref = dispatched(adapter)

    result = adapter.cancel(ref)

    assert (result.confirmed, result.provider_status_raw) == (True, "CANCELLED")
    assert cursor_sim.state_of(ref.provider_run_id) == "CANCELLED"


def test_cancel_on_a_finished_run_raises_nothing(adapter, cursor_sim):
    ref = dispatched(adapter)
    cursor_sim.set_state(ref.provider_run_id, "FINISHED")

    result = adapter.cancel(ref)

    assert (result.confirmed, result.accepted, result.provider_status_raw) == (
        True,
        False,
        "FINISHED",
    )
    assert cursor_sim.state_of(ref.provider_run_id) == "FINISHED"


def test_cancel_of_an_unknown_run_raises_run_not_found(adapter, cursor_sim):
    ref = dispatched(adapter)

    with pytest.raises(RunNotFound):
        adapter.cancel(RunRef(7, "run-does-not-exist", "", ref.provider_state))


# -- rate limits, auth, health ------------------------------------------------------------------


def test_after_a_429_no_request_reaches_cursor_before_retry_after(adapter, cursor_sim):
    ref = dispatched(adapter)
    cursor_sim.rate_limit_next(1, retry_after=1)
    with pytest.raises(RateLimited) as limited:
        adapter.poll_status(ref)
    assert limited.value.retry_after == 1.0
    sent = len(cursor_sim.request_log())

    refused = 0
    while True:
        try:
            state = adapter.poll_status(ref)
            break
        except RateLimited:
            refused += 1
            time.sleep(0.05)

    limited_at, next_at = (r["time"] for r in cursor_sim.request_log()[sent - 1 :])
    assert state.status == "running"  # CREATING lasts 0.5 s
    assert refused > 5
    assert len(cursor_sim.request_log()) == sent + 1
    assert next_at - limited_at >= 1.0


def test_a_revoked_key_fails_health_and_polls_without_showing_the_key(adapter, cursor_sim):
    ref = dispatched(adapter)
    cursor_sim.revoke_tokens()

    health = adapter.check_health()
    with pytest.raises(AuthError) as denied:
        adapter.poll_status(ref)

    assert not health.ok
    assert "API key rejected" in health.message
    assert "401" in denied.value.message
    for text in (health.message, str(denied.value), repr(denied.value)):
        assert KEY not in text


def test_health_names_the_accepted_key(adapter, cursor_sim):
    health = adapter.check_health()

    assert health.ok
    assert "simulator key" in health.message
    assert cursor_sim.stats()["requests"]["me"] == 1


def test_health_without_a_key_says_so_without_calling(cursor_sim):
    adapter = CursorAdapter(settings=make_adapter(cursor_sim).settings, secrets=Secrets())

    health = adapter.check_health()

    assert (health.ok, health.message) == (False, "No Cursor API key is configured.")
    assert cursor_sim.stats()["totalRequests"] == 0


def test_health_reports_an_unreachable_cursor(adapter, cursor_sim, monkeypatch):
    monkeypatch.setattr(CursorAdapter, "timeout", (1.0, 0.3))
    cursor_sim.hang_next(1.0)

    health = adapter.check_health()

    assert not health.ok
    assert "timed out" in health.message


# -- stream error codes -----------------------------------------------------------------------


def test_an_unknown_last_event_id_restarts_the_stream_without_repeating_events(
    adapter, cursor_sim, clock
):
    ref = dispatched(adapter)
    cursor_sim.advance(ref.provider_run_id)
    clock.skip(2.0)
    first = adapter.fetch_logs(ref, {})
    cursor_sim.advance(ref.provider_run_id)
    everything = adapter.fetch_logs(ref, {}).entries
    # The provider no longer knows the id we stored (say, its events were renumbered).
    lost = {**first.cursor, "lastEventId": "999", "done": False}

    resumed = adapter.fetch_logs(ref, lost)

    assert first.entries + resumed.entries == everything
    assert [e["kind"] for e in cursor_sim.request_log()][-2:] == ["stream", "stream"]


def test_an_unavailable_stream_is_retried_later_with_the_cursor_kept(adapter, cursor_sim, clock):
    ref = dispatched(adapter)
    cursor_sim.advance(ref.provider_run_id)
    clock.skip(1.0)
    first = adapter.fetch_logs(ref, {})
    cursor_sim.configure(stream_unavailable_next=1)

    with pytest.raises(TransientError):
        adapter.fetch_logs(ref, first.cursor)
    later = adapter.fetch_logs(ref, first.cursor)

    ids = [e.payload["eventId"] for e in first.entries + later.entries]
    assert len(ids) == len(set(ids))
    assert int(later.entries[0].payload["eventId"]) == int(ids[len(first.entries) - 1]) + 1


class _EndlessStreamHandler(BaseHTTPRequestHandler):
    """A Cursor stream whose agent never stops talking: an event every 10 ms,
    never a heartbeat, never the end."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for n in range(1, 100_000):
                body = f'id: {n}\nevent: assistant\ndata: {{"text": "more {n}"}}\n\n'.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(body), body))
                self.wfile.flush()
                time.sleep(0.01)
        except OSError:  # the reader hung up: what it is meant to do
            return

    def log_message(self, *args) -> None:
        pass


def test_a_stream_that_never_ends_holds_the_poll_only_within_its_time_budget(monkeypatch):
    """A reconciler thread reading a run's output gives its slot back after
    ``STREAM_BUDGET_S``, whatever the agent keeps sending; what was read is
    kept, and the next read resumes after it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EndlessStreamHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(cursor_module, "STREAM_BUDGET_S", 0.5)
    try:
        cleaned = CursorAdapter.validate_config(
            {"baseUrl": f"http://127.0.0.1:{server.server_port}", "repository": REPOSITORY}
        )
        adapter = CursorAdapter(settings=cleaned, secrets=Secrets({"apiKey": KEY}))
        ref = RunRef(1, "run-1", provider_state={"agentId": "agent-1"})
        started = time.monotonic()

        batch = adapter.fetch_logs(ref, {})

        assert time.monotonic() - started < 1.5
        assert len(batch.entries) > 5
        assert batch.cursor["lastEventId"] == str(batch.cursor["events"])
        assert not batch.cursor.get("done")
    finally:
        server.shutdown()
        server.server_close()
