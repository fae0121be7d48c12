"""Dispatch is idempotent: a dispatch task delivered twice, or run
again after the worker died between the provider's create and our database
write, never creates a second external run."""

from __future__ import annotations

import pytest

from connectors import services
from execution.dispatch import dispatch_run
from execution.models import RunEvent
from execution.services import RunRequest, create_run
from tests.factories import RunFactory
from tests.support.fake_adapter import SimulatedCrash

pytestmark = pytest.mark.django_db


@pytest.fixture
def fake_ready(project, fake):
    services.update_config(project, "fake", actor="test", enabled=True)
    services.write_credentials(project, "fake", {"apiKey": "idem-key-Lk3Jh5Gf7Ds9"}, user=None)
    return fake


def test_a_redelivered_dispatch_task_creates_the_external_run_once(project, fake_ready):
    run = RunFactory(project=project, provider_id="fake")

    first, second = dispatch_run(run.pk), dispatch_run(run.pk)

    assert (first, second) == ("dispatched", "skipped")
    assert fake_ready.create_calls == 1
    assert fake_ready.dispatch_calls == 1


def test_a_dispatch_interrupted_after_the_provider_created_the_run_is_recovered(
    project, fake_ready
):
    run = RunFactory(project=project, provider_id="fake")
    fake_ready.fail_next("crash_after_create")
    with pytest.raises(SimulatedCrash):
        dispatch_run(run.pk)
    run.refresh_from_db()
    assert run.provider_run_id == ""  # the crash came before our write
    assert run.dispatch_attempts == 1

    assert dispatch_run(run.pk) == "recovered"

    run.refresh_from_db()
    assert fake_ready.create_calls == 1
    assert fake_ready.recover_calls == 1
    assert run.provider_run_id == "fake-1"
    (recovered,) = RunEvent.objects.filter(run=run, event_type="dispatch_recovered")
    assert recovered.payload["providerRunId"] == "fake-1"


def test_a_retry_after_a_failed_send_looks_up_before_sending_again(project, fake_ready):
    run = RunFactory(project=project, provider_id="fake")
    fake_ready.fail_next("transient")
    assert dispatch_run(run.pk) == "retry_scheduled"

    assert dispatch_run(run.pk) == "dispatched"

    assert fake_ready.recover_calls == 1  # found nothing, so it sent
    assert fake_ready.create_calls == 1


def test_the_first_attempt_does_not_look_up(project, fake_ready):
    run = RunFactory(project=project, provider_id="fake")

    dispatch_run(run.pk)

    assert fake_ready.recover_calls == 0


def test_a_run_created_through_the_service_is_dispatched_once(
    project, operator, fake_ready, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        run, created = create_run(
            project, operator, RunRequest(command="echo hi", provider_id="fake")
        )

    assert created
    run.refresh_from_db()
    assert run.provider_run_id == "fake-1"
    assert dispatch_run(run.pk) == "skipped"
    assert fake_ready.create_calls == 1


def test_the_dispatch_key_is_handed_to_the_provider(project, fake_ready):
    run = RunFactory(project=project, provider_id="fake")

    dispatch_run(run.pk)

    assert fake_ready.runs["fake-1"].dispatch_key == run.dispatch_key
