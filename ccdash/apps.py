from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "ccdash"
    label = "ccdash"
    verbose_name = "Projects"

    def ready(self) -> None:
        from ccdash import checks  # noqa: F401  (registers the start-up checks)
