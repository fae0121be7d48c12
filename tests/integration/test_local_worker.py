"""Local runs through a real django-q2 worker (issue 2, acceptance 2, 5, 8):
the API enqueues, a ``qcluster`` process dispatches and executes."""

from __future__ import annotations

import time

import pytest

from execution.models import Run, RunEvent
from tests.conftest import client_for
from tests.integration.processes import processes_matching, wait_for

pytestmark = [pytest.mark.integration]

RUNS = "/api/execution/runs"
TERMINAL = {"succeeded", "failed", "canceled", "blocked"}


def launch(client, project, command: str) -> dict:
    response = client.post(RUNS, {"projectId": project.pk, "command": command}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def run_status(run_id: int) -> str:
    return Run.objects.values_list("status", flat=True).get(pk=run_id)


def finished(run_id: int) -> str | None:
    status = run_status(run_id)
    return status if status in TERMINAL else None


def test_a_worker_takes_an_echo_run_to_succeeded_with_its_output(qcluster, project, operator):
    run = launch(client_for(operator), project, "echo hi")
    assert run["status"] == "queued"

    assert wait_for(lambda: finished(run["id"]), timeout=30) == "succeeded"

    stdout = "".join(
        RunEvent.objects.filter(run_id=run["id"], stream="stdout").values_list("text", flat=True)
    )
    assert stdout == "hi\n"
    assert Run.objects.get(pk=run["id"]).exit_code == 0


def test_cancelling_a_running_sleep_ends_canceled_within_5s_and_leaves_no_process(
    qcluster, project, operator
):
    client = client_for(operator)
    run = launch(client, project, "sleep 60.25")
    wait_for(lambda: run_status(run["id"]) == "running", timeout=30)
    wait_for(lambda: processes_matching("sleep 60.25"), timeout=10)

    started = time.monotonic()
    response = client.post(f"{RUNS}/{run['id']}/cancel")
    assert response.status_code == 200
    assert wait_for(lambda: finished(run["id"]), timeout=5) == "canceled"

    assert time.monotonic() - started < 5
    assert processes_matching("sleep 60.25") == []
    again = client.post(f"{RUNS}/{run['id']}/cancel")
    assert again.status_code == 409


def test_a_command_printing_100000_lines_stores_them_in_order_up_to_the_cap(
    project, operator, tmp_path, monkeypatch, transactional_db, broker_enqueue
):
    from django_q.conf import Conf

    from tests.integration.processes import service_env, start, stop

    cap = 200_000
    env = service_env(EXECUTION_MAX_OUTPUT_BYTES=str(cap))
    monkeypatch.setattr(Conf, "PREFIX", env["CCDASH_Q_NAME"])
    monkeypatch.setattr(Conf, "CLUSTER_NAME", env["CCDASH_Q_NAME"])
    cluster = start(["manage.py", "qcluster"], env, tmp_path / "qcluster.log")
    try:
        run = launch(client_for(operator), project, "seq 1 100000")
        assert wait_for(lambda: finished(run["id"]), timeout=60) == "succeeded"
    finally:
        stop(cluster)

    events = list(RunEvent.objects.filter(run_id=run["id"]).order_by("sequence_no"))
    numbers = [e.sequence_no for e in events]
    assert numbers == list(range(1, len(events) + 1))  # no gaps
    output = [e for e in events if e.stream == "stdout"]
    text = "".join(e.text for e in output)
    lines = text.splitlines()
    assert text.endswith("\n")  # whole lines only
    assert lines == [str(n) for n in range(1, len(lines) + 1)]  # every line, in order
    assert len(text.encode()) <= cap
    assert len(lines) < 100_000
    truncations = [e for e in events if e.event_type == "output_truncated"]
    assert len(truncations) == 1
    assert truncations[0].sequence_no > output[-1].sequence_no
