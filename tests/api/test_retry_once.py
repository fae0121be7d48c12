"""A run is retried once: retrying it again, even concurrently, answers its
existing retry (200) instead of creating another run."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from execution import services
from execution.models import Run, RunEvent
from tests.conftest import client_for
from tests.factories import RunFactory

RUNS_URL = "/api/execution/runs"


def failed_run(project) -> Run:
    # Needs approval when retried, so no retry is dispatched (nothing executes).
    return RunFactory(project=project, command="curl https://example.com", status="failed")


@pytest.mark.django_db
def test_a_second_retry_answers_the_first_retry_with_200(project, operator_client):
    old = failed_run(project)

    first = operator_client.post(f"{RUNS_URL}/{old.pk}/retry")
    second = operator_client.post(f"{RUNS_URL}/{old.pk}/retry")

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["retryOfRunId"] == old.pk
    assert Run.objects.filter(retry_of=old).count() == 1
    assert RunEvent.objects.filter(run=old, event_type="retried").count() == 1


@pytest.mark.django_db
def test_the_retry_of_a_retry_is_a_new_run(project, operator_client):
    old = failed_run(project)
    first = operator_client.post(f"{RUNS_URL}/{old.pk}/retry").json()
    Run.objects.filter(pk=first["id"]).update(status="failed")

    again = operator_client.post(f"{RUNS_URL}/{first['id']}/retry")

    assert again.status_code == 201
    assert again.json()["retryOfRunId"] == first["id"]


@pytest.mark.django_db(transaction=True)
def test_three_concurrent_retries_create_one_run(project, operator, monkeypatch):
    old = failed_run(project)
    # Hold every request after its "already retried?" check until all three
    # are past it, so they really race on the insert.
    barrier = threading.Barrier(3, timeout=20)
    evaluate = services.policy_gate.evaluate_for

    def evaluate_together(*args, **kwargs):
        barrier.wait()
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(services.policy_gate, "evaluate_for", evaluate_together)
    answers: list[tuple[int, int]] = []

    def retry() -> None:
        try:
            response = client_for(operator).post(f"{RUNS_URL}/{old.pk}/retry")
            answers.append((response.status_code, response.json()["id"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=retry) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(code for code, _ in answers) == [200, 200, 201]
    assert len({run_id for _, run_id in answers}) == 1
    assert Run.objects.filter(retry_of=old).count() == 1
    assert RunEvent.objects.filter(run=old, event_type="retried").count() == 1
