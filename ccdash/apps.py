from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "ccdash"
    label = "ccdash"
    verbose_name = "Projects"
