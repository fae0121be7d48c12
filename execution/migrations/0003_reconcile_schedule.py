"""The django-q2 schedule that triggers a reconcile sweep every minute.

Created here (at migrate time, never at import or in ``ready()``) with
``update_or_create(name=…)``: ``Schedule.name`` is not unique, so this is what
keeps re-running the migration (or migrating back and forth) from adding a
second schedule. django-q2's scheduler looks at schedules about every 30 s; a
``manage.py reconcile --loop`` process polls faster.
"""

from django.db import migrations
from django.utils import timezone

SCHEDULE_NAME = "ccdash-reconcile"
SCHEDULED_TASK = "execution.reconciler.scheduled_sweep"
MINUTES = "I"  # django_q.models.Schedule.MINUTES (historical models lack the constant)


def ensure_reconcile_schedule(apps, schema_editor=None):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": SCHEDULED_TASK,
            "schedule_type": MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
        create_defaults={
            "func": SCHEDULED_TASK,
            "schedule_type": MINUTES,
            "minutes": 1,
            "repeats": -1,
            "next_run": timezone.now(),
        },
    )


class Migration(migrations.Migration):
    dependencies = [
        ("execution", "0002_reconcile_counters"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        # Reverse keeps the schedule: migrating forward again updates it in place.
        migrations.RunPython(ensure_reconcile_schedule, migrations.RunPython.noop),
    ]
