"""Cursor Cloud Agents v1 simulator over real HTTP: Cursor's documented behaviour."""

from __future__ import annotations

import time

import pytest
import requests

from connectors.providers.cursor.simulator import CursorSimulator

KEY = CursorSimulator.default_token


@pytest.fixture
def sim():
    with CursorSimulator() as simulator:
        yield simulator


@pytest.fixture
def api(sim):
    session = requests.Session()
    session.auth = (KEY, "")  # Basic, key as user name, empty password

    def call(method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return session.request(method, sim.url + path, **kwargs)

    return call


def create(api, text: str = "Fix the bug", branch: str = "ccdash/run-1") -> dict:
    body = {
        "prompt": {"text": text},
        "repos": [{"url": "https://github.com/acme/app", "startingRef": "main"}],
        "branchName": branch,
        "autoCreatePR": False,
    }
    response = api("POST", "/v1/agents", json=body)
    assert response.status_code == 201
    return response.json()


def run_path(created: dict) -> str:
    return f"/v1/agents/{created['agent']['id']}/runs/{created['run']['id']}"


def parse_sse(text: str) -> list[dict]:
    """SSE frames as dicts with ``id`` (or None), ``event`` and raw ``data``."""
    events = []
    for frame in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        events.append({"id": fields.get("id"), "event": fields["event"], "data": fields["data"]})
    return events


# -- agents and runs ----------------------------------------------------------------------


def test_create_answers_201_with_agent_and_creating_run(sim, api):
    created = create(api)

    agent, run = created["agent"], created["run"]
    assert agent["id"].startswith("bc-")
    assert run["id"].startswith("run-")
    assert agent["latestRunId"] == run["id"]
    assert run["agentId"] == agent["id"]
    assert run["status"] == "CREATING"
    assert {"url", "createdAt", "updatedAt"} <= set(agent) | set(run)
    assert sim.stats()["creations"] == 1


def test_create_without_prompt_text_is_a_validation_error(api):
    response = api("POST", "/v1/agents", json={"prompt": {}})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_bearer_auth_is_accepted_like_basic(sim):
    response = requests.get(
        f"{sim.url}/v1/me", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    )

    assert response.status_code == 200
    assert {"apiKeyName", "createdAt", "userEmail"} <= set(response.json())


def test_a_wrong_key_is_401_unauthorized(sim):
    response = requests.get(f"{sim.url}/v1/me", auth=("wrong", ""), timeout=5)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_advance_walks_creating_running_finished(sim, api):
    created = create(api)
    run_id = created["run"]["id"]

    sim.advance(run_id)
    running = api("GET", run_path(created)).json()["status"]
    sim.advance(run_id)
    finished = api("GET", run_path(created)).json()["status"]

    assert (running, finished) == ("RUNNING", "FINISHED")


def test_fail_marker_ends_in_error(sim, api):
    created = create(api, "Break it [sim:fail]")

    sim.advance(created["run"]["id"])
    sim.advance(created["run"]["id"])

    assert api("GET", run_path(created)).json()["status"] == "ERROR"


def test_a_follow_up_while_a_run_is_active_is_409_agent_busy(sim, api):
    created = create(api)
    follow_up = f"/v1/agents/{created['agent']['id']}/runs"

    busy = api("POST", follow_up, json={"prompt": {"text": "More"}})
    sim.set_state(created["run"]["id"], "FINISHED")
    accepted = api("POST", follow_up, json={"prompt": {"text": "More"}})

    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "agent_busy"
    assert accepted.status_code == 201
    assert accepted.json()["run"]["status"] == "CREATING"
    assert (
        api("GET", f"/v1/agents/{created['agent']['id']}").json()["latestRunId"]
        == (accepted.json()["run"]["id"])
    )
    assert sim.stats()["creations"] == 2


def test_unknown_agent_and_run_are_404_with_their_codes(api):
    created = create(api)

    no_agent = api("GET", "/v1/agents/bc-missing/runs/run-missing")
    no_run = api("GET", f"/v1/agents/{created['agent']['id']}/runs/run-missing")

    assert no_agent.status_code == 404
    assert no_agent.json()["error"]["code"] == "agent_not_found"
    assert no_run.status_code == 404
    assert no_run.json()["error"]["code"] == "run_not_found"


def test_cancel_answers_200_then_a_terminal_run_is_not_cancellable(api):
    created = create(api)

    cancelled = api("POST", run_path(created) + "/cancel")
    status = api("GET", run_path(created)).json()["status"]
    again = api("POST", run_path(created) + "/cancel")

    assert cancelled.status_code == 200
    assert cancelled.json() == {"id": created["run"]["id"]}
    assert status == "CANCELLED"
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "run_not_cancellable"


SUMMARY_FIELDS = {"id", "name", "status", "env", "url", "createdAt", "updatedAt", "latestRunId"}


def test_list_agents_pages_newest_first_in_the_summary_shape(api):
    ids = [create(api, branch=f"ccdash/run-{n}")["agent"]["id"] for n in range(3)]

    first = api("GET", "/v1/agents", params={"limit": 2}).json()
    second = api("GET", "/v1/agents", params={"limit": 2, "cursor": first["nextCursor"]}).json()

    items = first["items"] + second["items"]
    assert [item["id"] for item in items] == ids[::-1]
    assert all(set(item) == SUMMARY_FIELDS for item in items)
    assert {item["status"] for item in items} == {"ACTIVE"}
    assert second["nextCursor"] is None


def test_the_full_agent_has_its_branch_and_repos(api):
    created = create(api, branch="ccdash/run-9")

    agent = api("GET", f"/v1/agents/{created['agent']['id']}").json()

    assert agent["branchName"] == "ccdash/run-9"
    assert "repos" in agent
    assert set(agent) >= SUMMARY_FIELDS


def test_an_unknown_last_event_id_is_invalid_last_event_id(api):
    created = create(api)
    path = f"/v1/agents/{created['agent']['id']}/runs/{created['run']['id']}/stream"

    response = api("GET", path, headers={"Last-Event-ID": "999"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_last_event_id"


def test_a_stream_can_be_made_unavailable_once(sim, api):
    created = create(api)
    path = f"/v1/agents/{created['agent']['id']}/runs/{created['run']['id']}/stream"
    sim.configure(stream_unavailable_next=1)

    first = api("GET", path)

    assert first.status_code == 503
    assert first.json()["error"]["code"] == "stream_unavailable"
    assert api("GET", path, stream=True).status_code == 200


def test_a_bad_list_cursor_is_a_validation_error(api):
    response = api("GET", "/v1/agents", params={"cursor": "garbage"})

    assert response.status_code == 400


def test_artifacts_appear_once_the_run_finished(sim, api):
    created = create(api)
    path = f"/v1/agents/{created['agent']['id']}/artifacts"

    before = api("GET", path).json()
    sim.set_state(created["run"]["id"], "FINISHED")
    after = api("GET", path).json()

    assert before == {"items": []}
    assert after["items"][0]["path"] == "artifacts/summary.md"


# -- stream -------------------------------------------------------------------------------


def test_stream_of_a_finished_run_replays_every_event_and_closes(sim, api):
    created = create(api)
    sim.advance(created["run"]["id"])
    sim.advance(created["run"]["id"])

    response = api("GET", run_path(created) + "/stream")

    events = parse_sse(response.text)
    assert response.headers["Content-Type"] == "text/event-stream"
    assert [e["event"] for e in events] == ["status", "status", "status", "result", "done"]
    assert [e["id"] for e in events] == ["1", "2", "3", "4", "5"]
    assert '"FINISHED"' in events[2]["data"]


def test_stream_resumes_after_last_event_id(sim, api):
    created = create(api)
    sim.advance(created["run"]["id"])
    sim.advance(created["run"]["id"])

    response = api("GET", run_path(created) + "/stream", headers={"Last-Event-ID": "3"})

    assert [e["id"] for e in parse_sse(response.text)] == ["4", "5"]


def test_stream_of_a_running_run_sends_progress_then_closes_after_max_duration(sim, api):
    sim.configure(stream_max_seconds=1.2)
    created = create(api, "Long task [sim:hold]")
    sim.advance(created["run"]["id"])

    started = time.monotonic()
    response = api("GET", run_path(created) + "/stream")
    elapsed = time.monotonic() - started

    events = parse_sse(response.text)
    kinds = [e["event"] for e in events]
    assert 1.1 <= elapsed < 3
    assert kinds[:2] == ["status", "status"]
    assert "thinking" in kinds
    assert "assistant" in kinds
    assert "done" not in kinds


def test_stream_of_an_idle_run_sends_heartbeats(sim, api):
    sim.configure(stream_max_seconds=1.2)
    created = create(api, "Queued forever")
    sim.set_state(created["run"]["id"], "CREATING")

    events = parse_sse(api("GET", run_path(created) + "/stream").text)

    heartbeats = [e for e in events if e["event"] == "heartbeat"]
    assert heartbeats
    assert all(e["id"] is None for e in heartbeats)


def test_stream_after_the_retention_window_is_410_stream_expired(sim, api):
    sim.configure(stream_retention_seconds=0)
    created = create(api)
    sim.set_state(created["run"]["id"], "FINISHED")

    response = api("GET", run_path(created) + "/stream")

    assert response.status_code == 410
    assert response.json()["error"]["code"] == "stream_expired"


# -- faults in Cursor's shape -------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after_and_rate_limit_headers(sim, api):
    sim.rate_limit_next(1, retry_after=3)

    response = api("GET", "/v1/me")

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.headers["Retry-After"] == "3"
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert {"X-RateLimit-Limit", "X-RateLimit-Reset"} <= set(response.headers)


def test_server_errors_use_the_internal_error_code(sim, api):
    sim.fail_next(1)

    response = api("GET", "/v1/me")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "internal_error"


def test_revoked_key_is_401_unauthorized(sim, api):
    sim.revoke_tokens()

    response = api("GET", "/v1/me")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_a_vanished_run_is_run_not_found(sim, api):
    created = create(api)

    sim.vanish(created["run"]["id"])

    assert api("GET", run_path(created)).json()["error"]["code"] == "run_not_found"


def test_an_unknown_status_is_served_verbatim(sim, api):
    created = create(api)

    sim.set_state(created["run"]["id"], "mystery_state")

    assert api("GET", run_path(created)).json()["status"] == "mystery_state"


def test_seeded_runs_belong_to_their_own_agents(sim, api):
    run_ids = sim.seed(3, "running")

    agents = api("GET", "/v1/agents", params={"limit": 10}).json()["items"]

    assert sorted(agent["latestRunId"] for agent in agents) == sorted(run_ids)
    assert sim.state_of(run_ids[0]) == "RUNNING"
