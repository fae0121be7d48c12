"""GitHub Actions batch polling against the simulator: one listing per status
for many runs, per-run reads only for runs missing from the lists, and
conditional requests that GitHub does not count."""

from __future__ import annotations

import time

import pytest

from connectors.base import RunRef, Secrets
from connectors.errors import AuthError, RunNotFound
from connectors.providers.github_actions import adapter as github_actions
from connectors.providers.github_actions.adapter import GitHubActionsAdapter
from connectors.providers.github_actions.simulator import GitHubActionsSimulator

TOKEN = GitHubActionsSimulator.default_token
SETTINGS = {"owner": "ccdash", "repo": "demo", "workflow": "agent.yml", "ref": "main"}


@pytest.fixture
def sim():
    with GitHubActionsSimulator() as simulator:
        yield simulator


@pytest.fixture
def adapter(sim):
    cleaned = GitHubActionsAdapter.validate_config({**SETTINGS, "baseUrl": sim.url})
    return GitHubActionsAdapter(settings=cleaned, secrets=Secrets({"token": TOKEN}))


def refs_for(ids, raw="in_progress", created_at=None):
    created_at = time.time() - 60 if created_at is None else created_at
    return [
        RunRef(run_id=n, provider_run_id=run_id, created_at=created_at, provider_status_raw=raw)
        for n, run_id in enumerate(ids, 1)
    ]


def kinds(sim):
    return [(e["kind"], e["status"]) for e in sim.request_log()]


def test_the_adapter_declares_batch_polling():
    assert GitHubActionsAdapter.capabilities().supports_batch_poll is True


def test_many_running_runs_cost_one_listing_page(sim, adapter):
    ids = sim.seed(40, "running", owner="ccdash", repo="demo")

    states = adapter.poll_many(refs_for(ids))

    assert {state.status for state in states.values()} == {"running"}
    assert len(states) == 40
    assert kinds(sim) == [("list_runs", 200)]
    query = sim.request_log()[0]["query"]
    assert "status=in_progress" in query and "event=workflow_dispatch" in query
    assert "created=%3E%3D" in query and "per_page=100" in query


def test_listings_are_paginated(sim, adapter):
    ids = sim.seed(230, "running", owner="ccdash", repo="demo")

    states = adapter.poll_many(refs_for(ids))

    assert len(states) == 230
    assert kinds(sim) == [("list_runs", 200)] * 3


def test_runs_missing_from_the_lists_are_left_for_the_reconciler_to_read_alone(sim, adapter):
    ids = sim.seed(5, "running", owner="ccdash", repo="demo")
    sim.set_state(ids[0], "success")
    sim.set_state(ids[1], "failure")

    states = adapter.poll_many(refs_for(ids))

    # Not read here one after the other: the reconciler reads them side by side.
    assert sorted(states) == [3, 4, 5]
    assert {states[n].status for n in (3, 4, 5)} == {"running"}
    assert kinds(sim) == [("list_runs", 200)]


def test_a_run_that_started_is_found_in_the_other_status_list(sim, adapter):
    running = sim.seed(2, "running", owner="ccdash", repo="demo")
    queued = sim.seed(1, "queued", owner="ccdash", repo="demo")
    started = RunRef(9, queued[0], created_at=time.time() - 60, provider_status_raw="queued")
    refs = [*refs_for(running), started]
    sim.set_state(queued[0], "in_progress")

    states = adapter.poll_many(refs)

    assert states[9].status == "running"
    assert sorted(k for k, _ in kinds(sim)) == ["list_runs", "list_runs"]


def test_an_unchanged_listing_costs_a_free_304(sim, adapter, monkeypatch):
    monkeypatch.setattr(github_actions, "LISTING_REUSE_S", 0.0)  # read it again
    ids = sim.seed(20, "running", owner="ccdash", repo="demo")
    adapter.poll_many(refs_for(ids))

    states = adapter.poll_many(refs_for(ids))

    assert {state.status for state in states.values()} == {"running"}
    assert kinds(sim)[-1] == ("list_runs", 304)
    assert sim.budget_stats() == {"counted": 1, "notModified": 1, "rateLimited": 0}


def test_an_unchanged_run_read_alone_costs_a_free_304(sim, adapter):
    run_id = sim.seed(1, "running", owner="ccdash", repo="demo")[0]
    ref = RunRef(1, run_id)

    first, second = adapter.poll_status(ref), adapter.poll_status(ref)

    assert first == second and second.status == "running"
    assert kinds(sim) == [("get_run", 200), ("get_run", 304)]


def test_a_vanished_run_is_left_out_and_reported_when_read_alone(sim, adapter):
    ids = sim.seed(3, "running", owner="ccdash", repo="demo")
    sim.vanish(ids[0])
    refs = refs_for(ids)

    states = adapter.poll_many(refs)

    assert sorted(states) == [2, 3]
    assert states[2].status == states[3].status == "running"
    with pytest.raises(RunNotFound):
        adapter.poll_status(refs[0])


def test_a_listing_refused_fails_the_whole_batch(sim, adapter):
    ids = sim.seed(3, "running", owner="ccdash", repo="demo")
    sim.revoke_tokens()

    with pytest.raises(AuthError):
        adapter.poll_many(refs_for(ids))


def test_without_creation_times_the_listing_is_not_filtered_by_date(sim, adapter):
    ids = sim.seed(2, "running", owner="ccdash", repo="demo")
    refs = [RunRef(n, run_id) for n, run_id in enumerate(ids, 1)]

    states = adapter.poll_many(refs)

    assert len(states) == 2
    assert all("created" not in e["query"] for e in sim.request_log())
    assert "status=in_progress" in sim.request_log()[0]["query"]


def test_a_listing_stops_at_githubs_thousand_result_cap(sim, adapter, monkeypatch):
    monkeypatch.setattr(github_actions, "LIST_MAX_PAGES", 2)
    ids = sim.seed(250, "running", owner="ccdash", repo="demo")

    states = adapter.poll_many(refs_for(ids))

    assert len(states) == 200  # the 50 past the cap are left for the reconciler
    assert [k for k, _ in kinds(sim)].count("list_runs") == 2
    assert [k for k, _ in kinds(sim)].count("get_run") == 0


def test_every_page_of_a_listing_is_counted_for_pacing_even_when_read_at_once(sim, adapter):
    from connectors.http import counting

    ids = sim.seed(350, "running", owner="ccdash", repo="demo")

    with counting() as tally:
        states = adapter.poll_many(refs_for(ids))

    assert len(states) == 350
    assert tally.sent == 4 == [k for k, _ in kinds(sim)].count("list_runs")


def test_groups_polled_within_moments_share_one_listing(sim, adapter):
    ids = sim.seed(40, "running", owner="ccdash", repo="demo")

    first = adapter.poll_many(refs_for(ids[:20]))
    second = adapter.poll_many(refs_for(ids[20:]))

    assert len(first) == len(second) == 20
    assert kinds(sim) == [("list_runs", 200)]


def test_groups_created_at_different_times_share_one_listing(sim, adapter):
    """The groups of one round carry different oldest creation times; the
    later group used to ask for a listing of its own (a different ``created``
    bound: every page counted again)."""
    ids = sim.seed(40, "running", owner="ccdash", repo="demo")
    now = time.time()

    older = adapter.poll_many(refs_for(ids[20:], created_at=now - 3 * 3600))
    recent = adapter.poll_many(refs_for(ids[:20], created_at=now - 60))

    assert len(recent) == len(older) == 20
    assert [k for k, _ in kinds(sim)] == ["list_runs"]  # the wider listing holds both


def test_the_widest_recent_bound_is_kept_for_the_next_rounds(sim, adapter, monkeypatch):
    """A round whose recent group comes first asks for the same listing as the
    round before (the same URL: a free 304 when nothing changed)."""
    ids = sim.seed(40, "running", owner="ccdash", repo="demo")
    now = time.time()
    adapter.poll_many(refs_for(ids[20:], created_at=now - 3 * 3600))
    monkeypatch.setattr(github_actions, "LISTING_REUSE_S", 0.0)  # a round later

    adapter.poll_many(refs_for(ids[:20], created_at=now - 60))

    assert kinds(sim) == [("list_runs", 200), ("list_runs", 304)]


def test_a_listing_is_reused_for_moments_of_wall_clock_time_only(sim, adapter, monkeypatch):
    """Reuse was timed by ``time.monotonic``: where the wall clock moves on
    faster than the process's own work (a simulated hour), a listing stood for
    minutes of the provider's changes."""
    ids = sim.seed(20, "running", owner="ccdash", repo="demo")
    adapter.poll_many(refs_for(ids))
    sim.set_state(ids[0], "success")
    later = time.time() + github_actions.LISTING_REUSE_S + 1
    monkeypatch.setattr(github_actions.time, "time", lambda: later)
    monkeypatch.setattr(github_actions.time, "monotonic", lambda: 0.0)

    states = adapter.poll_many(refs_for(ids))

    # Listed again: the run that ended is no longer in it (left for the
    # reconciler to read alone), where the stale listing showed it running.
    assert 1 not in states and states[2].status == "running"
    assert [k for k, _ in kinds(sim)].count("list_runs") == 2


def test_a_group_of_queued_runs_finds_the_ones_that_started_in_the_listing(sim, adapter):
    """Only the statuses the group's runs were last seen in were listed: a
    group of queued runs read every run that had started one by one."""
    queued = sim.seed(5, "queued", owner="ccdash", repo="demo")
    for run_id in queued[:3]:
        sim.set_state(run_id, "in_progress")

    states = adapter.poll_many(refs_for(queued, raw="queued"))

    assert [states[n].status for n in range(1, 6)] == ["running"] * 3 + ["queued"] * 2
    assert sorted(k for k, _ in kinds(sim)) == ["list_runs", "list_runs"]
