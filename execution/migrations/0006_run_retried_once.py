"""A run is retried at most once (``unique_retry_of``).

Databases written before this constraint may hold several retries of one run
(concurrent retries each created one): the earliest keeps its link, the
others are unlinked (they stay as runs, with ``retry_of`` NULL) so the
constraint can be created.
"""

from django.db import migrations, models


def unlink_duplicate_retries(apps, schema_editor):
    Run = apps.get_model("execution", "Run")
    seen: set[int] = set()
    duplicates = []
    for run_id, retry_of_id in (
        Run.objects.filter(retry_of__isnull=False).order_by("retry_of_id", "id").values_list(
            "id", "retry_of_id"
        )
    ):
        if retry_of_id in seen:
            duplicates.append(run_id)
        seen.add(retry_of_id)
    if duplicates:
        Run.objects.filter(id__in=duplicates).update(retry_of=None)


class Migration(migrations.Migration):
    dependencies = [
        ("execution", "0005_run_kind"),
    ]

    operations = [
        migrations.RunPython(unlink_duplicate_retries, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="run",
            constraint=models.UniqueConstraint(
                condition=models.Q(("retry_of__isnull", False)),
                fields=("retry_of",),
                name="unique_retry_of",
            ),
        ),
    ]
