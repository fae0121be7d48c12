"""Local runs in the bubblewrap sandbox, through the real path: the run is
created (and approved where the policy asks) through the service, dispatched
to the local provider and executed by ``execution.local_runtime`` inline
(django-q2 sync mode)."""

from __future__ import annotations

import http.server
import os
import threading
import uuid
from pathlib import Path

import pytest

from execution import services
from execution.local_runtime import execute_run
from execution.models import Run, RunEvent
from execution.policy import NETWORK_COMMAND
from execution.services import RunRequest
from tests.factories import RunFactory
from tests.integration.processes import wait_for
from tests.sandboxing import kill_processes_with, live_processes_with, require_bwrap, unique_seconds


@pytest.fixture(autouse=True)
def sandboxed(settings):
    settings.EXECUTION_SANDBOX = "bwrap"
    settings.EXECUTION_BWRAP = require_bwrap()


@pytest.fixture
def local_run(project, operator, approver, django_capture_on_commit_callbacks):
    """Run ``command`` locally as the operator; the approver approves it when
    the policy asks. Returns the finished run."""

    def launch(command: str) -> Run:
        with django_capture_on_commit_callbacks(execute=True):
            run, _ = services.create_run(project, operator, RunRequest(command=command))
        if run.status == "awaiting_approval":
            with django_capture_on_commit_callbacks(execute=True):
                services.approve(run, approver)
        run.refresh_from_db()
        return run

    return launch


def stdout_of(run: Run) -> str:
    texts = RunEvent.objects.filter(run=run, stream="stdout").order_by("sequence_no")
    return "".join(texts.values_list("text", flat=True))


def python(code: str) -> str:
    """A ``python3 -c`` command line (the code must not contain double quotes)."""
    assert '"' not in code
    return f'python3 -c "{code}"'


# -------------------------------------------------------------------- writes


WRITE_FILES = """
for path in TARGETS:
    try:
        open(path, "w").write("escaped")
        print("wrote", path)
    except OSError as exc:
        print("refused", path, exc.strerror)
"""


def test_a_run_writes_its_workspace_and_nothing_outside(local_run, workspace, tmp_path):
    sibling = tmp_path / "sibling"  # beside the workspace, on the host
    sibling.mkdir()
    host_tmp = Path(f"/tmp/ccdash-escape-{uuid.uuid4().hex}")
    inside = workspace / "inside.txt"
    targets = [inside, sibling / "x.txt", host_tmp, Path("/usr/ccdash-escape"), Path("/etc/x")]
    script = f"TARGETS = {[str(t) for t in targets]!r}\n{WRITE_FILES}"
    (workspace / "write_files.py").write_text(script)

    try:
        run = local_run(python("exec(open('write_files.py').read())"))

        output = stdout_of(run)
        assert run.status == "succeeded", output
        assert inside.read_text() == "escaped"
        assert f"refused {sibling / 'x.txt'}" in output
        assert "refused /usr/ccdash-escape Read-only file system" in output
        assert not (sibling / "x.txt").exists()
        assert not host_tmp.exists()  # the run's /tmp is its own
        assert not Path("/usr/ccdash-escape").exists()
        assert not Path("/etc/x").exists()
    finally:
        host_tmp.unlink(missing_ok=True)
        Path("/usr/ccdash-escape").unlink(missing_ok=True)
        Path("/etc/x").unlink(missing_ok=True)


# ------------------------------------------------------------------- network


@pytest.fixture
def listener():
    """A loopback HTTP server (port 0) that counts the requests it gets."""
    hits: list[str] = []
    answer = f"pong-{uuid.uuid4().hex}".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.hits = hits
    server.answer = answer.decode()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    yield server
    server.shutdown()
    server.server_close()


def test_an_approved_network_command_reaches_the_network(local_run, listener):
    run = local_run(f"curl -sS --max-time 5 {listener.url}")

    assert NETWORK_COMMAND in run.reason_codes and run.approved_by_id is not None
    assert run.status == "succeeded", stdout_of(run)
    assert stdout_of(run) == listener.answer
    assert listener.hits == ["/"]


def test_code_approved_without_a_network_verdict_has_no_network(local_run, listener):
    fetch = (
        f"import urllib.request; print(urllib.request.urlopen('{listener.url}', timeout=5).read())"
    )

    run = local_run(python(fetch))

    assert NETWORK_COMMAND not in run.reason_codes  # the policy saw no network use
    assert run.status == "failed"
    assert listener.answer not in stdout_of(run)
    assert listener.hits == []


def test_a_network_command_that_nobody_approved_has_no_network(project, listener):
    # A network verdict alone is not enough: someone has to have said yes to it.
    run = RunFactory(
        project=project,
        command=f"curl -sS --max-time 5 {listener.url}",
        reason_codes=[NETWORK_COMMAND],
        status="queued",
    )

    assert execute_run(run.pk) == "failed"

    assert listener.hits == []
    run.refresh_from_db()
    assert run.exit_code == 7  # curl: failed to connect


# ------------------------------------------------------------ setsid, timeout


SETSID_CHILD = (
    "import subprocess, time; "
    "subprocess.Popen(['sleep', '{marker}'], start_new_session=True); "
    "print('started', flush=True); time.sleep(60)"
)


def test_a_setsid_child_is_gone_within_5s_of_the_timeout(local_run, settings):
    settings.EXECUTION = {**settings.EXECUTION, "DEFAULT_TIMEOUT_S": 1.0}
    marker = unique_seconds()
    try:
        run = local_run(python(SETSID_CHILD.format(marker=marker)))

        assert (run.status, run.status_reason) == ("failed", "timeout")
        assert stdout_of(run) == "started\n"
        wait_for(lambda: live_processes_with(marker) == [], timeout=5)
    finally:
        kill_processes_with(marker)


# ------------------------------------------------------------- availability


def test_without_bwrap_local_runs_fail_as_sandbox_unavailable(
    local_run, settings, admin_client, project
):
    settings.EXECUTION_SANDBOX = ""  # unset: the default, bwrap
    settings.EXECUTION_BWRAP = "/nonexistent/bwrap"

    run = local_run("echo hi")

    assert (run.status, run.status_reason) == ("failed", "sandbox_unavailable")
    change = RunEvent.objects.get(run=run, event_type="status_changed", payload__to="failed")
    assert "apt-get install bubblewrap" in change.text
    assert "EXECUTION_SANDBOX=none" in change.text
    assert stdout_of(run) == ""
    health = admin_client.post(
        "/api/execution/providers/local/check", {"projectId": project.pk}, format="json"
    )
    assert health.status_code == 200
    assert health.json()["status"] == "failing"
    assert "apt-get install bubblewrap" in health.json()["message"]
    listing = admin_client.get("/api/execution/providers", {"projectId": project.pk})
    assert listing.json()[0]["sandbox"] == "unavailable"


def test_with_none_local_runs_are_shown_unsandboxed(local_run, settings, admin_client, project):
    settings.EXECUTION_SANDBOX = "none"
    settings.EXECUTION_BWRAP = "/nonexistent/bwrap"

    run = local_run("echo hi")

    assert run.status == "succeeded"
    listing = admin_client.get("/api/execution/providers", {"projectId": project.pk})
    local = next(p for p in listing.json() if p["id"] == "local")
    assert local["sandbox"] == "none"
    assert {p["sandbox"] for p in listing.json() if p["id"] != "local"} == {None}
    event = RunEvent.objects.get(run=run, event_type="sandbox")
    assert event.payload == {"sandbox": "none", "network": False}


def test_a_sandboxed_run_says_so_in_its_events(local_run):
    run = local_run("echo hi")

    assert run.status == "succeeded"
    assert stdout_of(run) == "hi\n"
    event = RunEvent.objects.get(run=run, event_type="sandbox")
    assert event.payload == {"sandbox": "bwrap", "network": False}


# ------------------------------------------------------------------ make run


def test_the_demo_runs_unsandboxed_without_bwrap_and_says_so(settings, monkeypatch):
    from execution.management.commands.serve_demo import choose_demo_sandbox, sandbox_line

    monkeypatch.setenv("EXECUTION_SANDBOX", "")  # unset, and restored after the test
    settings.EXECUTION_SANDBOX = "bwrap"
    settings.EXECUTION_BWRAP = "/nonexistent/bwrap"

    choice = choose_demo_sandbox()

    assert choice.mode == "none"
    assert os.environ["EXECUTION_SANDBOX"] == "none"  # for the worker it starts
    line = sandbox_line(choice, demo_chose=True)
    assert "UNSANDBOXED" in line and "apt-get install bubblewrap" in line


def test_the_demo_never_overrides_an_explicit_bwrap(settings, monkeypatch):
    from execution.management.commands.serve_demo import choose_demo_sandbox

    monkeypatch.setenv("EXECUTION_SANDBOX", "bwrap")
    settings.EXECUTION_SANDBOX = "bwrap"
    settings.EXECUTION_BWRAP = "/nonexistent/bwrap"

    assert choose_demo_sandbox().mode == "unavailable"
    assert os.environ["EXECUTION_SANDBOX"] == "bwrap"
