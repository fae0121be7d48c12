"""Devin batch polling against the simulator: one listing of CCDash's sessions
(``GET /v1/sessions?tags=ccdash``) for many runs, paged with limit/offset,
and a session read of its own only for a session the listing did not show."""

from __future__ import annotations

import pytest

from connectors.base import RunRef, Secrets
from connectors.errors import AuthError, RunNotFound
from connectors.providers.devin import adapter as devin
from connectors.providers.devin.adapter import BASE_TAG, DevinAdapter
from connectors.providers.devin.simulator import DevinSimulator
from tests.providers.conftest import shift_clock

KEY = DevinSimulator.default_token
TAGS = [BASE_TAG, "ccdash-run-key"]


@pytest.fixture
def adapter(devin_sim) -> DevinAdapter:
    settings = DevinAdapter.validate_config({"baseUrl": devin_sim.url})
    return DevinAdapter(settings=settings, secrets=Secrets({"apiKey": KEY}))


def seed(sim, count: int, state: str = "working", tags=TAGS) -> list[str]:
    return sim.seed(count, state, tags=list(tags))


def refs_for(ids, first: int = 1) -> list[RunRef]:
    return [RunRef(n, session_id) for n, session_id in enumerate(ids, first)]


def kinds(sim) -> list[str]:
    return [entry["kind"] for entry in sim.request_log()]


def test_the_adapter_declares_batch_polling_and_separate_log_reads():
    caps = DevinAdapter.capabilities()

    assert caps.supports_batch_poll and caps.supports_logs
    assert caps.logs_with_status  # a run polled alone: status and messages in one read


def test_many_sessions_cost_one_listing_request(devin_sim, adapter):
    ids = seed(devin_sim, 30)

    states = adapter.poll_many(refs_for(ids))

    assert len(states) == 30
    assert {(s.provider_status_raw, s.status) for s in states.values()} == {("working", "running")}
    assert kinds(devin_sim) == ["list_sessions"]
    query = devin_sim.request_log()[0]["query"]
    assert f"tags={BASE_TAG}" in query and "limit=100" in query and "offset=0" in query


def test_listed_statuses_are_mapped_through_the_state_table(devin_sim, adapter):
    natives = ["working", "blocked", "finished", "expired", "suspend_requested"]
    ids = seed(devin_sim, len(natives))
    for session_id, native in zip(ids, natives, strict=True):
        devin_sim.set_state(session_id, native)

    states = adapter.poll_many(refs_for(ids))

    assert [(states[n].provider_status_raw, states[n].status) for n in range(1, 6)] == [
        ("working", "running"),
        ("blocked", "waiting"),
        ("finished", "succeeded"),
        ("expired", "failed"),
        ("suspend_requested", "running"),
    ]
    assert states[1].provider_url == adapter.session_url(ids[0])
    assert all(state.logs is None for state in states.values())  # messages: fetch_logs
    assert kinds(devin_sim) == ["list_sessions"]


def test_a_session_missing_from_the_listing_is_left_for_the_reconciler_to_read(devin_sim, adapter):
    listed = seed(devin_sim, 3)
    (untagged,) = seed(devin_sim, 1, "blocked", tags=["someone-else"])
    refs = refs_for([*listed, untagged])

    states = adapter.poll_many(refs)

    # Not read here one after the other: the reconciler reads such runs alone.
    assert sorted(states) == [1, 2, 3]
    assert {states[n].status for n in (1, 2, 3)} == {"running"}
    assert kinds(devin_sim) == ["list_sessions"]
    assert adapter.poll_status(refs[3]).status == "waiting"


def test_a_vanished_session_is_left_out_and_reported_when_read_alone(devin_sim, adapter):
    ids = seed(devin_sim, 3)
    devin_sim.vanish(ids[0])
    refs = refs_for(ids)

    states = adapter.poll_many(refs)

    assert sorted(states) == [2, 3]
    assert states[2].status == states[3].status == "running"
    with pytest.raises(RunNotFound):
        adapter.poll_status(refs[0])


def test_the_listing_is_paged_with_limit_and_offset(devin_sim, adapter, monkeypatch):
    monkeypatch.setattr(devin, "LIST_PAGE", 10)
    ids = seed(devin_sim, 25)

    states = adapter.poll_many(refs_for(ids))

    assert len(states) == 25 and {s.status for s in states.values()} == {"running"}
    assert kinds(devin_sim) == ["list_sessions"] * 3  # 10, 10, then 5: the end
    offsets = [e["query"].split("offset=")[1].split("&")[0] for e in devin_sim.request_log()]
    assert offsets == ["0", "10", "20"]


def test_the_listing_stops_once_every_session_was_seen(devin_sim, adapter, monkeypatch):
    monkeypatch.setattr(devin, "LIST_PAGE", 10)
    clock = shift_clock(devin_sim, monkeypatch)
    seed(devin_sim, 15)  # older: on the later pages
    clock.skip(5)
    recent = seed(devin_sim, 10)

    states = adapter.poll_many(refs_for(recent))

    assert len(states) == 10
    assert kinds(devin_sim) == ["list_sessions"]


def test_sessions_past_the_page_cap_are_left_for_the_reconciler(devin_sim, adapter, monkeypatch):
    monkeypatch.setattr(devin, "LIST_PAGE", 10)
    monkeypatch.setattr(devin, "LIST_MAX_PAGES", 2)
    ids = seed(devin_sim, 25)

    states = adapter.poll_many(refs_for(ids))

    assert len(states) == 20 and {s.status for s in states.values()} == {"running"}
    assert kinds(devin_sim).count("list_sessions") == 2
    assert kinds(devin_sim).count("get_session") == 0


def test_runs_of_one_session_share_its_listed_state(devin_sim, adapter):
    # A follow-up run continues its parent's session.
    (session_id,) = seed(devin_sim, 1, "blocked")

    states = adapter.poll_many([RunRef(1, session_id), RunRef(2, session_id)])

    assert states[1] == states[2] and states[1].status == "waiting"
    assert kinds(devin_sim) == ["list_sessions"]


def test_a_listing_refused_fails_the_whole_batch(devin_sim, adapter):
    ids = seed(devin_sim, 3)
    devin_sim.revoke_tokens()

    with pytest.raises(AuthError):
        adapter.poll_many(refs_for(ids))


def test_groups_polled_within_moments_share_one_listing(devin_sim, adapter):
    ids = seed(devin_sim, 40)

    first = adapter.poll_many(refs_for(ids[:20]))
    second = adapter.poll_many(refs_for(ids[20:], first=21))

    assert len(first) == len(second) == 20
    assert kinds(devin_sim) == ["list_sessions"]


def test_a_later_round_lists_again_and_sees_the_change(devin_sim, adapter, monkeypatch):
    monkeypatch.setattr(devin, "LISTING_REUSE_S", 0.0)
    ids = seed(devin_sim, 2)
    adapter.poll_many(refs_for(ids))
    devin_sim.set_state(ids[0], "finished")

    states = adapter.poll_many(refs_for(ids))

    assert states[1].status == "succeeded" and states[2].status == "running"
    assert kinds(devin_sim) == ["list_sessions", "list_sessions"]
