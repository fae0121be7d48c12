"""The reconciler's log bookkeeping moves out of the adapter-owned
``provider_state`` into fields of its own (``log_cursor``,
``logs_fetched_at``); existing values are carried over."""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import migrations, models

ENGINE_KEYS = ("logCursor", "logsFetchedAt")


def move_engine_state(apps, schema_editor):
    Run = apps.get_model("execution", "Run")
    for run in Run.objects.filter(provider_state__has_any_keys=ENGINE_KEYS).iterator():
        state = dict(run.provider_state)
        run.log_cursor = state.pop("logCursor", None) or {}
        fetched = state.pop("logsFetchedAt", None)
        if fetched is not None:
            run.logs_fetched_at = datetime.fromtimestamp(float(fetched), tz=UTC)
        run.provider_state = state
        run.save(update_fields=["log_cursor", "logs_fetched_at", "provider_state"])


def restore_engine_state(apps, schema_editor):
    Run = apps.get_model("execution", "Run")
    for run in Run.objects.exclude(log_cursor={}, logs_fetched_at=None).iterator():
        state = dict(run.provider_state)
        if run.log_cursor:
            state["logCursor"] = run.log_cursor
        if run.logs_fetched_at:
            state["logsFetchedAt"] = run.logs_fetched_at.timestamp()
        run.provider_state = state
        run.save(update_fields=["provider_state"])


class Migration(migrations.Migration):
    dependencies = [
        ("execution", "0006_run_retried_once"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="log_cursor",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="run",
            name="logs_fetched_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="run",
            name="provider_state",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Adapter-owned data (its ids); the engine never reads it.",
            ),
        ),
        migrations.RunPython(move_engine_state, restore_engine_state),
    ]
