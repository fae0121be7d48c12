from __future__ import annotations

from django.core.management.base import BaseCommand

from execution.demo import ensure_demo


class Command(BaseCommand):
    help = "Create the demo admin user and project, configured against the simulators."

    def handle(self, *args, **options):
        info = ensure_demo()
        self.stdout.write(
            f"demo project {info.project_id} (workspace {info.workspace}); "
            f"providers: local, {', '.join(info.providers) or '—'}; "
            f"login {info.username} / {info.password}"
        )
