"""Cancelling an external run: the cancel task asks the provider and settles
the run from what the provider says it became."""

from __future__ import annotations

import pytest

from connectors import services
from execution.dispatch import dispatch_run
from execution.services import cancel, cancel_external_run
from tests.factories import RunFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dispatched(project, fake, operator):
    services.update_config(project, "fake", actor="test", enabled=True)
    services.write_credentials(project, "fake", {"apiKey": "cancel-key-Zx81"}, user=None)
    run = RunFactory(project=project, provider_id="fake")
    dispatch_run(run.pk)
    run.refresh_from_db()
    fake.runs[run.provider_run_id].status = "working"
    run.status = "running"
    run.save(update_fields=["status"])
    return run


def provider_ends_as(fake, run, native: str) -> None:
    fake.runs[run.provider_run_id].status = native


def test_a_confirmed_cancel_ends_the_run_canceled(dispatched, fake, operator):
    cancel(dispatched, operator)

    assert cancel_external_run(dispatched.pk) == "canceled"
    dispatched.refresh_from_db()
    assert dispatched.status == "canceled"
    assert fake.cancel_calls == 1


def test_a_run_that_succeeded_before_the_cancel_took_effect_stays_succeeded(
    dispatched, fake, operator
):
    cancel(dispatched, operator)
    provider_ends_as(fake, dispatched, "done")

    assert cancel_external_run(dispatched.pk) == "succeeded"
    dispatched.refresh_from_db()
    assert dispatched.status == "succeeded"


def test_a_failure_state_reported_for_the_terminated_run_counts_as_the_cancel(
    dispatched, fake, operator
):
    cancel(dispatched, operator)
    provider_ends_as(fake, dispatched, "error")

    assert cancel_external_run(dispatched.pk) == "canceled"
    dispatched.refresh_from_db()
    assert dispatched.status == "canceled"
