from __future__ import annotations

from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    name = "execution"
    verbose_name = "Execution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from execution import checks  # noqa: F401  (registers the system checks)
