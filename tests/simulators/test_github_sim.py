"""GitHub Actions simulator over real HTTP: GitHub's documented behaviour, plus the
shared simulator machinery (faults, request log, seeding, reset, concurrency,
the ``python -m connectors.simulators`` entry point)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from connectors.providers.github_actions.simulator import GitHubActionsSimulator

TOKEN = GitHubActionsSimulator.default_token
REPO = "/repos/acme/app"
WORKFLOW = f"{REPO}/actions/workflows/agent.yml"
DISPATCH = f"{WORKFLOW}/dispatches"


class Api:
    """A requests session bound to one simulator, authenticated by default."""

    def __init__(self, base_url: str, token: str | None = TOKEN) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return self.session.request(method, self.base_url + path, **kwargs)


@pytest.fixture
def sim():
    with GitHubActionsSimulator() as simulator:
        yield simulator


@pytest.fixture
def api(sim):
    return Api(sim.url)


def dispatch(
    api: Api, command: str = "echo hi", run_id: str = "r1", *, headers=None, **body
) -> requests.Response:
    payload = {"ref": "main", "inputs": {"ccdash_run_id": run_id, "command": command}}
    return api("POST", DISPATCH, json={**payload, **body}, headers=headers)


def dispatch_run_id(api: Api, command: str = "echo hi", run_id: str = "r1") -> int:
    response = dispatch(api, command, run_id, return_run_details=True)
    assert response.status_code == 200
    return response.json()["workflow_run_id"]


def get_run(api: Api, run_id: int) -> dict:
    response = api("GET", f"{REPO}/actions/runs/{run_id}")
    assert response.status_code == 200
    return response.json()


# -- dispatch -----------------------------------------------------------------------------


def test_dispatch_with_return_run_details_answers_200_with_run_details(sim, api):
    response = dispatch(api, return_run_details=True)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"workflow_run_id", "run_url", "html_url"}
    assert body["run_url"] == f"{sim.url}{REPO}/actions/runs/{body['workflow_run_id']}"
    assert api("GET", body["run_url"].removeprefix(sim.url)).json()["id"] == body["workflow_run_id"]


def test_dispatch_without_return_run_details_answers_204_without_body(sim, api):
    response = dispatch(api)

    assert response.status_code == 204
    assert response.content == b""
    assert sim.stats()["creations"] == 1


def test_api_version_2026_03_10_always_answers_run_details(api):
    response = dispatch(api, headers={"X-GitHub-Api-Version": "2026-03-10"})

    assert response.status_code == 200
    assert "workflow_run_id" in response.json()


@pytest.mark.parametrize("legacy_status", [422, 400])
def test_legacy_server_rejects_return_run_details_and_accepts_plain_dispatch(
    sim, api, legacy_status
):
    sim.configure(legacy_dispatch_status=legacy_status)

    rejected = dispatch(api, return_run_details=True)
    accepted = dispatch(api)

    assert rejected.status_code == legacy_status
    assert "return_run_details" in rejected.json()["message"]
    assert accepted.status_code == 204
    assert sim.stats()["creations"] == 1


def test_twenty_five_inputs_are_accepted(sim, api):
    inputs = {f"input_{n}": "x" for n in range(25)}

    response = api("POST", DISPATCH, json={"ref": "main", "inputs": inputs})

    assert response.status_code == 204
    assert sim.stats()["creations"] == 1


def test_more_than_twenty_five_inputs_is_422(sim, api):
    inputs = {f"input_{n}": "x" for n in range(26)}

    response = api("POST", DISPATCH, json={"ref": "main", "inputs": inputs})

    assert response.status_code == 422
    assert sim.stats()["creations"] == 0


def test_missing_ref_is_422(api):
    assert api("POST", DISPATCH, json={"inputs": {}}).status_code == 422


def test_workflow_without_dispatch_trigger_is_422(api):
    path = f"{REPO}/actions/workflows/no-trigger.yml/dispatches"

    response = api("POST", path, json={"ref": "main"})

    assert response.status_code == 422
    assert response.json()["message"] == "Workflow does not have 'workflow_dispatch' trigger"


def test_unknown_workflow_is_404(api):
    response = api("POST", f"{REPO}/actions/workflows/nope.yml/dispatches", json={"ref": "main"})

    assert response.status_code == 404
    assert response.json()["message"] == "Not Found"


def test_every_dispatch_creates_a_run_there_is_no_idempotency(sim, api):
    dispatch(api)
    dispatch(api)

    assert sim.stats()["creations"] == 2


def test_display_title_is_the_run_name_rendered_from_inputs(api):
    run_id = dispatch_run_id(api, run_id="ccdash-42")

    assert get_run(api, run_id)["display_title"] == "CCDash ccdash-42"


def test_workflows_are_configurable_over_http(sim, api):
    configured = requests.post(
        f"{sim.url}/_sim/workflows",
        json={"file": "custom.yml", "run_name": "Run ${{ inputs.ticket }}"},
        timeout=5,
    )
    response = api(
        "POST",
        f"{REPO}/actions/workflows/custom.yml/dispatches",
        json={"ref": "main", "inputs": {"ticket": "T-1"}, "return_run_details": True},
    )

    assert configured.status_code == 200
    assert get_run(api, response.json()["workflow_run_id"])["display_title"] == "Run T-1"


# -- listing ------------------------------------------------------------------------------


def test_listing_honours_branch_event_and_created_newest_first(sim, api):
    first = dispatch_run_id(api, run_id="a")
    second = dispatch_run_id(api, run_id="b")
    api("POST", DISPATCH, json={"ref": "release", "inputs": {"ccdash_run_id": "c"}})
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))

    listed = api(
        "GET",
        f"{WORKFLOW}/runs",
        params={"event": "workflow_dispatch", "branch": "main", "created": f">={since}"},
    ).json()
    future = api("GET", f"{WORKFLOW}/runs", params={"created": ">=2999-01-01"}).json()
    other_event = api("GET", f"{WORKFLOW}/runs", params={"event": "push"}).json()

    assert listed["total_count"] == 2
    assert [run["id"] for run in listed["workflow_runs"]] == [second, first]
    assert future == {"total_count": 0, "workflow_runs": []}
    assert other_event["total_count"] == 0


def test_listing_is_scoped_to_the_repository_and_paginated(api):
    for n in range(3):
        dispatch(api, run_id=str(n))

    other_repo = api("GET", "/repos/acme/other/actions/workflows/agent.yml/runs").json()
    page = api("GET", f"{WORKFLOW}/runs", params={"per_page": 2, "page": 2}).json()

    assert other_repo["total_count"] == 0
    assert page["total_count"] == 3
    assert len(page["workflow_runs"]) == 1


def test_listing_delay_hides_a_fresh_run(sim, api):
    sim.configure(listing_delay_seconds=30)
    dispatch(api)

    assert api("GET", f"{WORKFLOW}/runs").json()["total_count"] == 0


# -- run state ----------------------------------------------------------------------------


def test_run_carries_the_documented_fields(api):
    run = get_run(api, dispatch_run_id(api))

    for name in (
        "id",
        "status",
        "conclusion",
        "html_url",
        "run_attempt",
        "display_title",
        "created_at",
        "updated_at",
        "run_started_at",
        "jobs_url",
        "logs_url",
        "head_branch",
        "event",
    ):
        assert name in run
    assert (run["status"], run["conclusion"], run["event"]) == ("queued", None, "workflow_dispatch")


def test_default_script_moves_from_queued_to_in_progress_on_the_clock(api):
    run_id = dispatch_run_id(api)

    time.sleep(0.6)

    assert get_run(api, run_id)["status"] == "in_progress"


def test_advance_walks_the_script_to_success(sim, api):
    run_id = dispatch_run_id(api)

    sim.advance(run_id)
    running = get_run(api, run_id)
    requests.post(f"{sim.url}/_sim/runs/{run_id}/advance", timeout=5)
    done = get_run(api, run_id)

    assert (running["status"], running["conclusion"]) == ("in_progress", None)
    assert (done["status"], done["conclusion"]) == ("completed", "success")


def test_fail_marker_ends_in_failure(sim, api):
    run_id = dispatch_run_id(api, command="make test [sim:fail]")

    sim.advance(run_id)
    sim.advance(run_id)

    assert get_run(api, run_id)["conclusion"] == "failure"


def test_hold_and_slow_markers_pick_the_running_duration(sim, api):
    held = dispatch_run_id(api, command="[sim:hold]")
    slow = dispatch_run_id(api, command="[sim:slow]")

    held_steps = sim.run_snapshot(held)["steps"]
    slow_steps = sim.run_snapshot(slow)["steps"]

    assert held_steps[1] == {"state": "in_progress", "seconds": None}
    assert slow_steps[1] == {"state": "in_progress", "seconds": 20.0}


# -- cancel -------------------------------------------------------------------------------


def test_cancel_answers_202_and_completes_asynchronously(sim, api):
    run_id = dispatch_run_id(api, command="[sim:hold]")
    sim.advance(run_id)

    response = api("POST", f"{REPO}/actions/runs/{run_id}/cancel")
    right_after = get_run(api, run_id)
    time.sleep(0.4)
    later = get_run(api, run_id)

    assert response.status_code == 202
    assert right_after["status"] == "in_progress"
    assert (later["status"], later["conclusion"]) == ("completed", "cancelled")


def test_cancel_of_a_completed_run_is_409(sim, api):
    run_id = dispatch_run_id(api)
    sim.set_state(run_id, "success")

    response = api("POST", f"{REPO}/actions/runs/{run_id}/cancel")

    assert response.status_code == 409
    assert response.json()["message"] == "Cannot cancel a workflow run that is completed."


def test_force_cancel_completes_at_once(api):
    run_id = dispatch_run_id(api)

    response = api("POST", f"{REPO}/actions/runs/{run_id}/force-cancel")

    assert response.status_code == 202
    assert get_run(api, run_id)["conclusion"] == "cancelled"


# -- jobs and logs ------------------------------------------------------------------------


def test_jobs_list_the_latest_job_with_steps(sim, api):
    run_id = dispatch_run_id(api)
    sim.advance(run_id)

    body = api("GET", f"{REPO}/actions/runs/{run_id}/jobs", params={"filter": "latest"}).json()

    job = body["jobs"][0]
    assert body["total_count"] == 1
    assert {"id", "status", "conclusion", "steps", "html_url"} <= set(job)
    assert job["status"] == "in_progress"
    assert [step["status"] for step in job["steps"]] == ["completed", "in_progress"]


def test_job_logs_redirect_to_a_signed_url_serving_a_growing_log(sim, api):
    run_id = dispatch_run_id(api, command="pytest -x")
    sim.advance(run_id)
    job_id = api("GET", f"{REPO}/actions/runs/{run_id}/jobs").json()["jobs"][0]["id"]

    redirect = api("GET", f"{REPO}/actions/jobs/{job_id}/logs", allow_redirects=False)
    first = requests.get(redirect.headers["Location"], timeout=5)
    time.sleep(0.6)
    second = requests.get(redirect.headers["Location"], timeout=5)

    assert redirect.status_code == 302
    assert redirect.headers["Location"].startswith(f"{sim.url}/_blob/")
    assert "expires=" in redirect.headers["Location"]
    assert first.headers["Content-Type"].startswith("text/plain")
    assert "command: pytest -x" in first.text
    assert second.text.startswith(first.text)
    assert len(second.text.splitlines()) >= len(first.text.splitlines()) + 2


def test_log_blob_with_a_tampered_signature_is_403(sim, api):
    run_id = dispatch_run_id(api)
    location = api(
        "GET", f"{REPO}/actions/jobs/{run_id * 1000 + 1}/logs", allow_redirects=False
    ).headers["Location"]

    response = requests.get(location[:-4] + "0000", timeout=5)

    assert response.status_code == 403


def test_run_logs_redirect_to_a_zip(sim, api):
    run_id = dispatch_run_id(api, command="make build")
    sim.advance(run_id)
    sim.advance(run_id)

    response = api("GET", f"{REPO}/actions/runs/{run_id}/logs")

    assert response.history[0].status_code == 302
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    log = archive.read(archive.namelist()[0]).decode()
    assert "command: make build" in log
    assert "conclusion success" in log


# -- auth, headers, health ----------------------------------------------------------------


def test_missing_and_bad_tokens_get_401_in_github_shape(sim, api):
    anonymous = Api(sim.url, token=None)("GET", f"{REPO}/actions/runs/1")
    bad = Api(sim.url, token="nope")("GET", f"{REPO}/actions/runs/1")

    assert anonymous.status_code == 401
    assert anonymous.json()["message"] == "Requires authentication"
    assert bad.status_code == 401
    assert bad.json()["message"] == "Bad credentials"
    assert "documentation_url" in bad.json()


def test_token_scheme_is_accepted_like_bearer(sim):
    response = requests.get(
        f"{sim.url}{REPO}", headers={"Authorization": f"token {TOKEN}"}, timeout=5
    )

    assert response.status_code == 200


def test_every_answer_carries_rate_limit_headers(api):
    for response in (api("GET", REPO), api("GET", f"{REPO}/actions/runs/1"), dispatch(api)):
        for header in ("limit", "remaining", "used", "reset", "resource"):
            assert f"x-ratelimit-{header}" in response.headers
    assert int(response.headers["x-ratelimit-used"]) == 3


def test_a_conditional_get_of_an_unchanged_resource_is_a_free_304(sim, api):
    run_id = sim.seed(1, "running")[0]
    path = f"{REPO}/actions/runs/{run_id}"
    first = api("GET", path)

    again = api("GET", path, headers={"If-None-Match": first.headers["ETag"]})

    assert first.status_code == 200 and first.headers["ETag"].startswith('W/"')
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    # GitHub: a 304 does not count against the primary rate limit.
    assert again.headers["x-ratelimit-used"] == first.headers["x-ratelimit-used"] == "1"
    assert sim.budget_stats() == {"counted": 1, "notModified": 1, "rateLimited": 0}


def test_a_conditional_get_of_a_changed_resource_answers_200_and_counts(sim, api):
    run_id = sim.seed(1, "running")[0]
    path = f"{REPO}/actions/runs/{run_id}"
    etag = api("GET", path).headers["ETag"]
    sim.set_state(run_id, "success")

    changed = api("GET", path, headers={"If-None-Match": etag})

    assert changed.status_code == 200
    assert changed.json()["conclusion"] == "success"
    assert changed.headers["ETag"] != etag
    assert changed.headers["x-ratelimit-used"] == "2"


def test_an_enforced_quota_answers_403_until_the_window_resets(api):
    clock = [1_000_000.0]
    with GitHubActionsSimulator(clock=lambda: clock[0]) as sim:
        sim.configure(enforce_rate_limit=True, ratelimit_limit=2)
        api = Api(sim.url)
        answers = [api("GET", REPO) for _ in range(3)]
        clock[0] += 3600

        after_reset = api("GET", REPO)

    assert [a.status_code for a in answers] == [200, 200, 403]
    assert answers[2].headers["x-ratelimit-remaining"] == "0"
    assert int(answers[2].headers["x-ratelimit-reset"]) == 1_000_000 + 3600
    assert after_reset.status_code == 200
    assert sim.budget_stats() == {"counted": 3, "notModified": 0, "rateLimited": 1}


def test_repository_and_workflow_endpoints_serve_health_checks(api):
    repo = api("GET", REPO)
    workflow = api("GET", WORKFLOW)
    by_id = api("GET", f"{REPO}/actions/workflows/{workflow.json()['id']}")

    assert repo.json()["full_name"] == "acme/app"
    assert workflow.json()["path"] == ".github/workflows/agent.yml"
    assert by_id.json()["name"] == workflow.json()["name"]
    assert api("GET", f"{REPO}/actions/workflows/missing.yml").status_code == 404


# -- faults -------------------------------------------------------------------------------


def test_latency_delays_api_requests_but_not_control_endpoints(sim, api):
    requests.post(f"{sim.url}/_sim/faults", json={"latency_ms": 200}, timeout=5)

    started = time.monotonic()
    api("GET", REPO)
    api_seconds = time.monotonic() - started
    started = time.monotonic()
    requests.get(f"{sim.url}/_sim/stats", timeout=5)
    control_seconds = time.monotonic() - started

    assert api_seconds >= 0.2
    assert control_seconds < 0.15


def test_fail_next_answers_503_in_github_shape_then_recovers(sim, api):
    sim.fail_next(2)

    statuses = [api("GET", REPO).status_code for _ in range(3)]

    assert statuses == [503, 503, 200]


def test_rate_limit_next_answers_429_with_retry_after(sim, api):
    sim.rate_limit_next(1, retry_after=7)

    limited = api("GET", REPO)

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert api("GET", REPO).status_code == 200


def test_rate_limit_can_answer_403_with_remaining_zero_and_reset(sim, api):
    sim.configure(rate_limit_status=403)
    sim.rate_limit_next(1, retry_after=30)

    limited = api("GET", REPO)

    assert limited.status_code == 403
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert int(limited.headers["x-ratelimit-reset"]) >= time.time() + 25
    assert "Retry-After" not in limited.headers


def test_hang_never_answers_an_api_request_but_control_endpoints_still_answer(sim, api):
    requests.post(f"{sim.url}/_sim/faults", json={"hang_next": 1, "hang_seconds": 1.0}, timeout=5)

    control = requests.get(f"{sim.url}/_sim/stats", timeout=1)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api("GET", REPO, timeout=0.3)
    after = api("GET", REPO)

    assert control.status_code == 200
    assert after.status_code == 200
    assert sim.request_log()[0]["status"] is None


def test_revoked_tokens_get_401(sim, api):
    sim.revoke_tokens()

    response = api("GET", REPO)

    assert response.status_code == 401
    assert response.json()["message"] == "Bad credentials"


def test_a_vanished_run_is_404_from_then_on(sim, api):
    run_id = dispatch_run_id(api)

    requests.post(f"{sim.url}/_sim/runs/{run_id}/vanish", timeout=5)

    assert api("GET", f"{REPO}/actions/runs/{run_id}").status_code == 404
    assert api("GET", f"{WORKFLOW}/runs").json()["total_count"] == 0


def test_an_unknown_native_status_is_served_verbatim(sim, api):
    run_id = dispatch_run_id(api)

    requests.post(f"{sim.url}/_sim/runs/{run_id}/state", json={"state": "mystery_state"}, timeout=5)

    run = get_run(api, run_id)
    assert (run["status"], run["conclusion"]) == ("mystery_state", None)


def test_control_endpoints_reject_unknown_fields_and_runs(sim):
    bad_fault = requests.post(f"{sim.url}/_sim/faults", json={"explode": 1}, timeout=5)
    bad_option = requests.post(f"{sim.url}/_sim/options", json={"explode": 1}, timeout=5)
    missing_run = requests.post(f"{sim.url}/_sim/runs/123/advance", timeout=5)

    assert bad_fault.status_code == 400
    assert bad_option.status_code == 400
    assert missing_run.status_code == 404


# -- seeding, log, stats, reset -----------------------------------------------------------


def test_seed_creates_a_thousand_held_runs_quickly_without_counting_creations(sim, api):
    started = time.monotonic()
    response = requests.post(
        f"{sim.url}/_sim/seed", json={"count": 1000, "state": "running"}, timeout=5
    )
    elapsed = time.monotonic() - started

    ids = response.json()["ids"]
    assert response.status_code == 201
    assert len(set(ids)) == 1000
    assert elapsed < 1.0
    assert get_run(api, ids[-1])["status"] == "in_progress"
    assert sim.stats()["runs"] == 1000
    assert sim.stats()["creations"] == 0


def test_seeded_runs_hold_until_advanced(sim, api):
    (run_id,) = sim.seed(1, "queued")

    assert sim.run_snapshot(run_id)["steps"][0] == {"state": "queued", "seconds": None}
    assert sim.advance(run_id) == "in_progress"


def test_request_log_records_requests_without_credentials(sim, api):
    api("GET", f"{WORKFLOW}/runs", params={"branch": "main"})

    log = requests.get(f"{sim.url}/_sim/requests", timeout=5).json()["items"]

    assert log == [
        {
            "method": "GET",
            "path": f"{WORKFLOW}/runs",
            "query": "branch=main",
            "time": log[0]["time"],
            "kind": "list_runs",
            "status": 200,
        }
    ]
    assert TOKEN not in str(log)


def test_stats_count_requests_by_kind(sim, api):
    dispatch_run_id(api)
    api("GET", f"{REPO}/actions/runs/1")

    stats = requests.get(f"{sim.url}/_sim/stats", timeout=5).json()

    assert stats["creations"] == 1
    assert stats["requests"] == {"dispatch": 1, "get_run": 1}


def test_reset_clears_runs_faults_options_and_log(sim, api):
    run_id = dispatch_run_id(api)
    sim.configure(legacy_dispatch_status=422)
    sim.set_latency(50)
    sim.fail_next(5)

    response = requests.post(f"{sim.url}/_sim/reset", timeout=5)

    assert response.status_code == 200
    assert sim.stats() == {
        "provider": "github_actions",
        "creations": 0,
        "runs": 0,
        "requests": {},
        "totalRequests": 0,
    }
    assert sim.faults().latency_ms == 0
    assert sim.options["legacy_dispatch_status"] is None
    assert api("GET", f"{REPO}/actions/runs/{run_id}").status_code == 404


def test_sixty_four_concurrent_clients_are_all_served(sim):
    sim.set_latency(20)
    ids = sim.seed(256)

    def poll(run_id: str) -> int:
        return Api(sim.url)("GET", f"{REPO}/actions/runs/{run_id}").status_code

    with ThreadPoolExecutor(max_workers=64) as pool:
        statuses = list(pool.map(poll, ids))

    assert statuses == [200] * 256


# -- process entry point ------------------------------------------------------------------


def test_module_entry_point_serves_all_three_and_stops_on_sigterm():
    repo_root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    ports = ["--github-actions-port", "0", "--cursor-port", "0", "--devin-port", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "connectors.simulators", *ports],
        stdout=subprocess.PIPE,
        text=True,
        cwd=repo_root,
        env=env,
    )
    try:
        lines = [process.stdout.readline().strip() for _ in range(3)]
        urls = {line.split(": ")[0]: line.split(" ")[1] for line in lines}
        providers = {
            name: requests.get(f"{url}/_sim/stats", timeout=5).json()["provider"]
            for name, url in urls.items()
        }
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        process.kill()
    assert providers == {"github_actions": "github_actions", "cursor": "cursor", "devin": "devin"}
