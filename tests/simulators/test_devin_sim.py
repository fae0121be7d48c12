"""Devin v1 simulator over real HTTP: Devin's documented behaviour and the
documented choices for what v1 leaves unconfirmed (DELETE)."""

from __future__ import annotations

import time

import pytest
import requests

from connectors.providers.devin.simulator import DevinSimulator

KEY = DevinSimulator.default_token


@pytest.fixture
def sim():
    with DevinSimulator() as simulator:
        yield simulator


@pytest.fixture
def api(sim):
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {KEY}"

    def call(method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return session.request(method, sim.url + path, **kwargs)

    return call


def create(api, prompt: str = "Fix the bug", **body) -> dict:
    response = api("POST", "/v1/sessions", json={"prompt": prompt, **body})
    assert response.status_code == 200
    return response.json()


def session(api, session_id: str) -> dict:
    response = api("GET", f"/v1/sessions/{session_id}")
    assert response.status_code == 200
    return response.json()


# -- create and read ----------------------------------------------------------------------


def test_create_answers_session_id_url_and_is_new_session(sim, api):
    created = create(api, title="Bug", tags=["ccdash"])

    assert created["session_id"].startswith("devin-")
    assert created["url"].startswith(sim.url)
    assert created["is_new_session"] is True
    assert sim.stats()["creations"] == 1


def test_session_carries_the_documented_fields(api):
    created = create(api, title="Bug", tags=["ccdash"])

    body = session(api, created["session_id"])

    for name in (
        "session_id",
        "status",
        "status_enum",
        "created_at",
        "updated_at",
        "title",
        "tags",
        "messages",
        "pull_request",
        "structured_output",
    ):
        assert name in body
    assert (body["status_enum"], body["title"], body["tags"]) == ("working", "Bug", ["ccdash"])
    assert body["messages"][0]["type"] == "initial_user_message"
    assert body["messages"][0]["message"] == "Fix the bug"


def test_idempotent_create_with_the_same_prompt_returns_the_existing_session(sim, api):
    first = create(api, "Same prompt", idempotent=True)
    second = create(api, "Same prompt", idempotent=True)

    assert second == {**first, "is_new_session": False}
    assert sim.stats()["creations"] == 1


def test_create_without_idempotent_always_creates(sim, api):
    first = create(api, "Same prompt")
    second = create(api, "Same prompt")

    assert first["session_id"] != second["session_id"]
    assert sim.stats()["creations"] == 2


def test_create_without_prompt_is_a_fastapi_validation_error(api):
    response = api("POST", "/v1/sessions", json={"title": "no prompt"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "prompt"]


def test_messages_grow_while_working_with_stable_ids(api):
    created = create(api, "Long task [sim:hold]")

    time.sleep(1.1)
    earlier = session(api, created["session_id"])["messages"]
    time.sleep(1.0)
    later = session(api, created["session_id"])["messages"]

    assert len(later) > len(earlier) >= 2
    assert later[: len(earlier)] == earlier
    assert all({"event_id", "timestamp", "type", "message"} <= set(m) for m in later)
    assert len({m["event_id"] for m in later}) == len(later)


def test_advance_finishes_with_a_pull_request_and_structured_output(sim, api):
    created = create(api)

    sim.advance(created["session_id"])
    body = session(api, created["session_id"])

    assert body["status_enum"] == "finished"
    assert body["pull_request"]["url"].startswith("http")
    assert body["structured_output"] is not None
    assert "pull request" in body["messages"][-1]["message"]


def test_fail_marker_ends_expired(sim, api):
    created = create(api, "Impossible [sim:fail]")

    sim.advance(created["session_id"])

    assert session(api, created["session_id"])["status_enum"] == "expired"


def test_block_marker_makes_the_session_wait_for_the_user_then_work_on(sim, api):
    created = create(api, "Ask me first [sim:block]")

    sim.advance(created["session_id"])
    blocked = session(api, created["session_id"])
    sim.advance(created["session_id"])
    resumed = session(api, created["session_id"])

    assert blocked["status_enum"] == "blocked"
    assert "input" in blocked["messages"][-1]["message"]
    assert resumed["status_enum"] == "working"


def test_list_sessions_newest_first_filtered_by_tags(api):
    create(api, "one", tags=["a"])
    second = create(api, "two", tags=["a", "b"])
    third = create(api, "three", tags=["b"])

    everything = api("GET", "/v1/sessions").json()["sessions"]
    tagged = api("GET", "/v1/sessions", params={"tags": "b"}).json()["sessions"]

    assert [s["session_id"] for s in tagged] == [third["session_id"], second["session_id"]]
    assert len(everything) == 3
    assert "messages" not in everything[0]


# -- terminate ----------------------------------------------------------------------------


def test_delete_terminates_with_the_documented_default_status(sim, api):
    created = create(api)

    response = api("DELETE", f"/v1/sessions/{created['session_id']}")

    assert response.status_code == 200
    assert response.json() == {"detail": "Session terminated"}
    assert session(api, created["session_id"])["status_enum"] == "expired"


def test_delete_of_an_ended_session_answers_409(api):
    created = create(api)
    api("DELETE", f"/v1/sessions/{created['session_id']}")

    again = api("DELETE", f"/v1/sessions/{created['session_id']}")

    assert again.status_code == 409
    assert "already ended" in again.json()["detail"]


def test_terminated_status_and_ended_delete_status_are_configurable(sim, api):
    sim.configure(terminated_status_enum="stopped", ended_delete_status=400)
    created = create(api)

    api("DELETE", f"/v1/sessions/{created['session_id']}")
    again = api("DELETE", f"/v1/sessions/{created['session_id']}")

    assert session(api, created["session_id"])["status_enum"] == "stopped"
    assert again.status_code == 400


def test_delete_of_a_finished_session_is_refused(sim, api):
    created = create(api)
    sim.advance(created["session_id"])

    assert api("DELETE", f"/v1/sessions/{created['session_id']}").status_code == 409


# -- faults in Devin's shape --------------------------------------------------------------


def test_missing_and_wrong_keys_are_401_with_detail(sim):
    anonymous = requests.get(f"{sim.url}/v1/sessions", timeout=5)
    wrong = requests.get(
        f"{sim.url}/v1/sessions", headers={"Authorization": "Bearer nope"}, timeout=5
    )

    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert "detail" in anonymous.json()
    assert "detail" in wrong.json()


def test_rate_limit_is_429_with_retry_after(sim, api):
    sim.rate_limit_next(1, retry_after=2)

    response = api("GET", "/v1/sessions")

    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    assert "detail" in response.json()


def test_a_vanished_session_is_404_with_detail(sim, api):
    created = create(api)

    sim.vanish(created["session_id"])
    response = api("GET", f"/v1/sessions/{created['session_id']}")

    assert response.status_code == 404
    assert response.json() == {"detail": "Session not found"}


def test_an_unknown_status_enum_is_served_verbatim(sim, api):
    created = create(api)

    sim.set_state(created["session_id"], "mystery_state")

    assert session(api, created["session_id"])["status_enum"] == "mystery_state"


def test_seeded_sessions_are_working_and_listed(sim, api):
    ids = sim.seed(5, "running")

    listed = api("GET", "/v1/sessions").json()["sessions"]

    assert {s["session_id"] for s in listed} == set(ids)
    assert {s["status_enum"] for s in listed} == {"working"}
