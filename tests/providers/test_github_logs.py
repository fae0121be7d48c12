"""GitHub job logs: every job (past 100), each line with its ending, a
completed job's log downloaded once, redirects followed only to storage hosts
and never with credentials, downloads capped."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.base import RunRef, Secrets
from connectors.errors import PermanentError
from connectors.providers.github_actions.adapter import GitHubActionsAdapter
from connectors.providers.github_actions.simulator import GitHubActionsSimulator
from tests.providers.conftest import shift_clock

SETTINGS = {"owner": "ccdash", "repo": "demo", "workflow": "agent.yml", "ref": "main"}
BLOB_TEXT = "first line\nsecond line\r\nthird line\n"


class Listener:
    """A loopback HTTP server that records every request and serves BLOB_TEXT."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                listener.requests.append({"path": self.path, "headers": dict(self.headers)})
                body = BLOB_TEXT.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _shifted(github_sim, monkeypatch):
    shift_clock(github_sim, monkeypatch)


@pytest.fixture
def adapter(github_sim):
    settings = GitHubActionsAdapter.validate_config({**SETTINGS, "baseUrl": github_sim.url})
    token = GitHubActionsSimulator.default_token
    return GitHubActionsAdapter(settings=settings, secrets=Secrets({"token": token}))


def running_run(sim, state: str = "in_progress") -> RunRef:
    """A run that worked a few simulated seconds (a log of several lines), then
    is in ``state``."""
    (run_id,) = sim.seed(1, "in_progress", inputs={"command": "make test"})
    sim.clock.skip(2.0)
    if state != "in_progress":
        sim.set_state(run_id, state)
    return RunRef(run_id=1, provider_run_id=run_id)


def kinds(sim, kind: str) -> int:
    return sum(1 for entry in sim.request_log() if entry["kind"] == kind)


def test_every_line_keeps_its_line_ending(github_sim, adapter):
    ref = running_run(github_sim, "success")

    entries = adapter.fetch_logs(ref, {}).entries

    assert entries
    assert all(entry.text.endswith("\n") for entry in entries)
    assert "".join(entry.text for entry in entries).count("\n") == len(entries)


def test_jobs_past_the_first_hundred_are_read(github_sim, adapter):
    github_sim.configure(jobs_per_run=150)
    ref = running_run(github_sim, "success")

    entries = adapter.fetch_logs(ref, {}).entries

    assert len({entry.payload["job"] for entry in entries}) == 150
    assert kinds(github_sim, "list_jobs") == 2  # per_page=100, then the Link: next page


def test_a_completed_jobs_log_is_downloaded_once(github_sim, adapter):
    ref = running_run(github_sim, "success")

    first = adapter.fetch_logs(ref, {})
    second = adapter.fetch_logs(ref, first.cursor)
    third = adapter.fetch_logs(ref, second.cursor)

    assert first.entries
    assert second.entries == third.entries == ()
    assert kinds(github_sim, "job_logs") == 1


def test_a_running_jobs_log_is_read_again_until_it_completes(github_sim, adapter):
    ref = running_run(github_sim)

    cursor = adapter.fetch_logs(ref, {}).cursor
    adapter.fetch_logs(ref, cursor)

    assert kinds(github_sim, "job_logs") == 2


def test_a_redirect_to_a_host_outside_the_allowlist_is_not_followed(github_sim, adapter, listener):
    github_sim.configure(log_redirect_base=listener.url)
    ref = running_run(github_sim, "success")

    with pytest.raises(PermanentError) as raised:
        adapter.fetch_logs(ref, {})

    assert listener.requests == []
    assert "127.0.0.1" in raised.value.message


def test_a_configured_storage_host_is_followed_without_credentials(
    github_sim, adapter, listener, settings
):
    settings.CONNECTORS_STORAGE_HOSTS = [listener.url.removeprefix("http://")]
    github_sim.configure(log_redirect_base=listener.url)
    ref = running_run(github_sim, "success")

    entries = adapter.fetch_logs(ref, {}).entries

    assert [entry.text for entry in entries] == ["first line\n", "second line\r\n", "third line\n"]
    (request,) = listener.requests
    assert "Authorization" not in request["headers"]
    assert "Cookie" not in request["headers"]


def test_a_log_over_the_output_cap_is_cut_and_not_downloaded_again(github_sim, adapter, settings):
    settings.EXECUTION = {**settings.EXECUTION, "MAX_OUTPUT_BYTES": 120}
    ref = running_run(github_sim, "success")

    batch = adapter.fetch_logs(ref, {})
    again = adapter.fetch_logs(ref, batch.cursor)

    stdout = "".join(entry.text for entry in batch.entries if entry.stream == "stdout")
    assert len(stdout.encode()) <= 120
    assert batch.entries[-1].stream == "provider"
    assert "cut at 120 bytes" in batch.entries[-1].text
    assert again.entries == ()
    assert kinds(github_sim, "job_logs") == 1


@pytest.mark.django_db
@pytest.mark.parametrize("allowed", [False, True])
def test_a_redirect_outside_the_allowlist_stores_nothing_from_it(
    project, github_sim, listener, settings, allowed
):
    from connectors import services as connector_services
    from execution.dispatch import dispatch_run
    from execution.models import RunEvent
    from execution.reconciler import Reconciler
    from tests.factories import RunFactory

    connector_services.update_config(
        project,
        "github_actions",
        actor="test",
        enabled=True,
        settings={**SETTINGS, "baseUrl": github_sim.url},
    )
    connector_services.write_credentials(
        project, "github_actions", GitHubActionsSimulator.demo_credentials(), user=None
    )
    github_sim.configure(log_redirect_base=listener.url)
    if allowed:  # the control: the same redirect, allowlisted, is followed and stored
        settings.CONNECTORS_STORAGE_HOSTS = [listener.url.removeprefix("http://")]
    run = RunFactory(project=project, provider_id="github_actions", command="echo hi")
    dispatch_run(run.pk)
    run.refresh_from_db()
    github_sim.set_state(run.provider_run_id, "in_progress")
    github_sim.clock.skip(2.0)
    github_sim.set_state(run.provider_run_id, "success")

    with Reconciler(batch_size=1, concurrency=1, inline=True) as reconciler:
        reconciler.sweep(run_ids=[run.pk], force=True)

    run.refresh_from_db()
    stored = "".join(
        RunEvent.objects.filter(run=run, event_type="output").values_list("text", flat=True)
    )
    assert run.status == "succeeded"
    if allowed:
        assert stored == BLOB_TEXT
        assert len(listener.requests) == 1
    else:
        assert listener.requests == []
        assert stored == ""


def test_a_job_shows_only_the_conclusions_jobs_have(github_sim, adapter):
    (run_id,) = github_sim.seed(1, "startup_failure")
    jobs = adapter._jobs(RunRef(1, run_id))

    assert [job["conclusion"] for job in jobs] == ["failure"]
