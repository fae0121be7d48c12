"""The run list's fast rendering answers exactly what DRF's own would."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework import serializers

from execution.api.serializers import RunSerializer
from tests.api.helpers import make_run
from tests.factories import RunFactory, UserFactory

pytestmark = pytest.mark.django_db


def drf(run) -> dict:
    return serializers.ModelSerializer.to_representation(RunSerializer(), run)


def test_every_field_renders_as_drf_renders_it(project):
    approver = UserFactory(username="fast-approver")
    now = timezone.now()
    first = make_run(project, status="failed")
    runs = [
        make_run(project),
        RunFactory(
            project=project,
            approved_by=approver,
            approved_at=now,
            started_at=now - timedelta(seconds=3),
            ended_at=now,
            exit_code=0,
            status="succeeded",
            sync_status="stale",
            reason_codes=["a", "b"],
            retry_of=first,
            provider_url="https://example.test/run/1",
            last_reconciled_at=now.replace(microsecond=0),
        ),
    ]
    for run in runs:
        run.refresh_from_db()
        assert RunSerializer(run).data == drf(run)
        assert list(RunSerializer(run).data) == list(drf(run))


def test_a_list_renders_as_drf_renders_it(project):
    for n in range(3):
        make_run(project, command=f"echo {n}")
    rows = list(type(make_run(project)).objects.filter(project=project))
    assert RunSerializer(rows, many=True).data == [drf(run) for run in rows]
