"""Sandboxed local runs in a real django-q2 worker: the run cannot read the
worker's environment, and cancel ends processes that left the process group
with ``setsid()``. Runs are created through the API and approved by a second
person where the policy asks for it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from django_q.conf import Conf

from execution.models import Run, RunEvent
from tests.conftest import client_for
from tests.integration.processes import service_env, start, stop, wait_for
from tests.sandboxing import kill_processes_with, live_processes_with, require_bwrap, unique_seconds

pytestmark = [pytest.mark.integration]

RUNS = "/api/execution/runs"
TERMINAL = {"succeeded", "failed", "canceled", "blocked"}
SECRET = f"marker-{uuid.uuid4().hex}"


@pytest.fixture
def worker(transactional_db, broker_enqueue, tmp_path, monkeypatch):
    """A qcluster whose environment holds a secret, as a real worker's holds
    SECRET_KEY and DATABASE_URL."""
    env = service_env(
        CCDASH_SECRET_MARKER=SECRET, EXECUTION_SANDBOX="bwrap", EXECUTION_BWRAP=require_bwrap()
    )
    monkeypatch.setattr(Conf, "PREFIX", env["CCDASH_Q_NAME"])
    monkeypatch.setattr(Conf, "CLUSTER_NAME", env["CCDASH_Q_NAME"])
    process = start(["manage.py", "qcluster"], env, tmp_path / "qcluster.log")
    yield process
    stop(process)


def launch(operator, approver, project, command: str) -> int:
    created = client_for(operator).post(
        RUNS, {"projectId": project.pk, "command": command}, format="json"
    )
    assert created.status_code == 201, created.content
    run = created.json()
    if run["status"] == "awaiting_approval":
        approved = client_for(approver).post(f"{RUNS}/{run['id']}/approve", {}, format="json")
        assert approved.status_code == 200, approved.content
    return run["id"]


def status(run_id: int) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run_id)


def finished(run_id: int) -> str | None:
    current = status(run_id)
    return current if current in TERMINAL else None


def stdout_of(run_id: int) -> str:
    texts = RunEvent.objects.filter(run_id=run_id, stream="stdout").order_by("sequence_no")
    return "".join(texts.values_list("text", flat=True))


READ_ENVIRONMENTS = (
    "import os\n"
    "for name, path in [('parent', '/proc/%d/environ' % os.getppid()),"
    " ('init', '/proc/1/environ')]:\n"
    "    try:\n"
    "        print(name, open(path, 'rb').read())\n"
    "    except OSError as exc:\n"
    "        print(name, 'unreadable', exc)\n"
    "print('own', sorted(os.environ.items()))\n"
)


def test_a_run_cannot_read_the_workers_environment(worker, project, operator, approver):
    (Path(project.workspace_root) / "read_env.py").write_text(READ_ENVIRONMENTS)

    run_id = launch(operator, approver, project, "python3 -c \"exec(open('read_env.py').read())\"")

    assert wait_for(lambda: finished(run_id), timeout=30) == "succeeded"
    output = stdout_of(run_id)
    assert SECRET not in output
    assert "CCDASH_SECRET_MARKER" not in output
    assert "DJANGO_SETTINGS_MODULE" not in output
    # …because what the run could read holds only its own variables.
    assert "parent b'" in output and "init b'" in output and "'PATH'" in output


SETSID_CHILD = (
    "import subprocess, time; "
    "subprocess.Popen(['setsid', 'sleep', '{marker}']); "
    "print('started', flush=True); time.sleep(60)"
)


def test_a_setsid_child_is_gone_within_5s_of_cancel(worker, project, operator, approver):
    marker = unique_seconds()
    try:
        run_id = launch(
            operator, approver, project, f'python3 -c "{SETSID_CHILD.format(marker=marker)}"'
        )
        wait_for(lambda: status(run_id) == "running", timeout=30)
        wait_for(lambda: live_processes_with(marker), timeout=10)

        canceled_at = time.monotonic()
        response = client_for(operator).post(f"{RUNS}/{run_id}/cancel")
        assert response.status_code == 200

        assert wait_for(lambda: finished(run_id), timeout=5) == "canceled"
        wait_for(lambda: live_processes_with(marker) == [], timeout=5)
        assert time.monotonic() - canceled_at < 5
    finally:
        kill_processes_with(marker)
