"""The periodic start: one django-q2 schedule, created at migrate time (spec §6)."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.core.management import call_command
from django_q.models import Schedule

from execution.reconciler import SCHEDULE_NAME, SCHEDULED_TASK, scheduled_sweep

migration = importlib.import_module("execution.migrations.0003_reconcile_schedule")


@pytest.mark.django_db(transaction=True)
def test_migrating_creates_the_reconcile_schedule():
    call_command("migrate", "execution", "0002", verbosity=0)
    Schedule.objects.all().delete()

    call_command("migrate", verbosity=0)

    schedule = Schedule.objects.get(name=SCHEDULE_NAME)
    assert schedule.func == SCHEDULED_TASK
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == (Schedule.MINUTES, 1, -1)


@pytest.mark.django_db
def test_creating_the_schedule_three_times_leaves_one():
    for _ in range(3):
        migration.ensure_reconcile_schedule(apps)

    assert Schedule.objects.filter(name=SCHEDULE_NAME).count() == 1


@pytest.mark.django_db(transaction=True)
def test_migrating_back_and_forth_three_times_leaves_one_schedule():
    for _ in range(3):
        call_command("migrate", "execution", "0002", verbosity=0)
        call_command("migrate", verbosity=0)

    assert Schedule.objects.filter(name=SCHEDULE_NAME).count() == 1


@pytest.mark.django_db
def test_a_schedule_edited_by_hand_is_put_back_in_shape():
    Schedule.objects.filter(name=SCHEDULE_NAME).update(func="nothing", minutes=5)

    migration.ensure_reconcile_schedule(apps)

    schedule = Schedule.objects.get(name=SCHEDULE_NAME)
    assert (schedule.func, schedule.minutes) == (SCHEDULED_TASK, 1)


@pytest.mark.django_db
def test_the_scheduled_task_sweeps(fake, make_run):
    fake.add("p-1", "done")
    run = make_run("p-1")

    summary = scheduled_sweep()

    run.refresh_from_db()
    assert run.status == "succeeded"
    assert summary.startswith("1 sweep(s): claimed=1 changed=1")


def test_the_task_path_resolves_to_the_task():
    from django.utils.module_loading import import_string

    assert import_string(SCHEDULED_TASK) is scheduled_sweep
