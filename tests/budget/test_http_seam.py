"""The HTTP seam's budget savers: conditional requests (ETag, free 304s) and
the token budget read from GitHub's rate-limit headers (against the GitHub
simulator on loopback, which counts like GitHub)."""

from __future__ import annotations

import time

import pytest

from connectors import budget
from connectors.errors import RateLimited
from connectors.http import ConditionalCache, HttpClient, counting, etags
from connectors.providers.github_actions.simulator import GitHubActionsSimulator

TOKEN = GitHubActionsSimulator.default_token
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def sim():
    with GitHubActionsSimulator() as simulator:
        yield simulator


@pytest.fixture
def client(sim):
    return HttpClient(sim.url, provider_id="github_actions")


def test_a_conditional_get_revalidates_and_a_304_hands_back_the_cached_answer(sim, client):
    run_id = sim.seed(1, "running")[0]
    path = f"/repos/acme/app/actions/runs/{run_id}"

    first = client.request("GET", path, headers=AUTH, conditional=True)
    with counting() as tally:
        second = client.request("GET", path, headers=AUTH, conditional=True)

    assert first.status_code == 200 and first.not_modified is False
    assert second.status_code == 200 and second.not_modified is True
    assert second.json() == first.json()
    assert (tally.sent, tally.not_modified, tally.counted) == (1, 1, 0)
    assert sim.budget_stats()["counted"] == 1 and sim.budget_stats()["notModified"] == 1
    assert sim.request_log()[-1]["status"] == 304


def test_a_changed_resource_is_read_again_and_cached_anew(sim, client):
    run_id = sim.seed(1, "running")[0]
    path = f"/repos/acme/app/actions/runs/{run_id}"
    client.request("GET", path, headers=AUTH, conditional=True)
    sim.set_state(run_id, "failure")

    changed = client.request("GET", path, headers=AUTH, conditional=True)
    again = client.request("GET", path, headers=AUTH, conditional=True)

    assert changed.not_modified is False and changed.json()["conclusion"] == "failure"
    assert again.not_modified is True and again.json()["conclusion"] == "failure"


def test_cached_answers_are_kept_per_credential(sim, client):
    run_id = sim.seed(1, "running")[0]
    path = f"/repos/acme/app/actions/runs/{run_id}"
    client.request("GET", path, headers=AUTH, conditional=True)

    other = client.request(
        "GET", path, headers={"Authorization": "Bearer other-token"}, conditional=True
    )

    assert other.status_code == 401  # not our cached answer to someone else's token


def test_a_plain_get_sends_no_validator(sim, client):
    run_id = sim.seed(1, "running")[0]
    path = f"/repos/acme/app/actions/runs/{run_id}"
    client.request("GET", path, headers=AUTH)
    client.request("GET", path, headers=AUTH)

    assert sim.budget_stats() == {"counted": 2, "notModified": 0, "rateLimited": 0}
    assert len(etags) == 0


def test_the_cache_is_bounded_by_count_and_age(sim, client, monkeypatch):
    small = ConditionalCache(entries=2, max_age_s=60)
    monkeypatch.setattr("connectors.http.etags", small)
    ids = sim.seed(3, "running")
    for run_id in ids:
        client.request("GET", f"/repos/a/b/actions/runs/{run_id}", headers=AUTH, conditional=True)
    assert len(small) == 2

    real_monotonic = time.monotonic
    monkeypatch.setattr("connectors.http.time.monotonic", lambda: real_monotonic() + 61)
    answer = client.request(
        "GET", f"/repos/a/b/actions/runs/{ids[-1]}", headers=AUTH, conditional=True
    )

    assert answer.not_modified is False  # too old to revalidate: read in full


def test_the_budget_is_kept_under_a_hash_of_the_token_never_the_token(sim, client):
    client.request("GET", "/repos/acme/app", headers=AUTH)

    known = budget.book.all()

    assert len(known) == 1
    assert known[0].provider_id == "github_actions"
    assert known[0].key == budget.token_key(TOKEN) and TOKEN not in known[0].key
    assert (known[0].limit, known[0].remaining) == (5000, 4999)


def test_polls_stop_at_the_reserve_and_writes_still_go_through(sim, client):
    reserve = budget.RESERVE_MIN
    sim.configure(ratelimit_limit=reserve + 2)
    client.request("GET", "/repos/acme/app", headers=AUTH)  # remaining: reserve + 1
    client.request("GET", "/repos/acme/app", headers=AUTH)  # remaining: reserve
    sent = len(sim.request_log())

    with pytest.raises(RateLimited) as refused:
        client.request("GET", "/repos/acme/app", headers=AUTH)
    run_id = sim.seed(1, "running")[0]
    cancel = client.request("POST", f"/repos/acme/app/actions/runs/{run_id}/cancel", headers=AUTH)

    assert refused.value.retry_after and refused.value.retry_after > 3000
    assert "reserve" in refused.value.message and TOKEN not in refused.value.message
    assert len(sim.request_log()) == sent + 1  # only the cancel left
    assert cancel.status_code == 202
    assert sim.budget_stats()["rateLimited"] == 0


def test_polling_resumes_once_the_window_has_reset(sim, client, monkeypatch):
    sim.configure(ratelimit_limit=budget.RESERVE_MIN)
    client.request("GET", "/repos/acme/app", headers=AUTH)
    with pytest.raises(RateLimited):
        client.request("GET", "/repos/acme/app", headers=AUTH)
    later = time.time() + 3601
    monkeypatch.setattr("connectors.http.time.time", lambda: later)

    assert budget.book.get("github_actions", budget.token_key(TOKEN)).current(later) is False
    assert client.request("GET", "/repos/acme/app", headers=AUTH).status_code == 200
