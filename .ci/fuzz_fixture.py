"""Seed a throwaway database for the API fuzz run and print an API token.

Run by ``.ci/fuzz`` with ``ccdash.settings`` and a scratch ``DATABASE_URL``:
one superuser (so every operation, project creation included, is reachable),
a project whose workspace is inside ``EXECUTION_WORKSPACES_ROOT``, and a run in
each interesting state, so ids the fuzzer tries (1, 2, …) hit real objects.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccdash.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from knox.models import AuthToken  # noqa: E402

from ccdash.models import Membership, Project  # noqa: E402
from execution.models import Run  # noqa: E402


def main() -> None:
    user = get_user_model().objects.create_superuser("fuzz", password="fuzz-password-not-secret")
    workspace = Path(settings.EXECUTION_WORKSPACES_ROOT) / "fuzz"
    workspace.mkdir(parents=True, exist_ok=True)
    project = Project.objects.create(name="Fuzz", workspace_root=str(workspace))
    Membership.objects.create(project=project, user=user, role="admin")
    for n, status in enumerate(
        ["failed", "awaiting_approval", "succeeded", "canceled", "running"], start=1
    ):
        Run.objects.create(
            project=project,
            created_by=None,
            command=f"echo fuzz {n}",
            policy_verdict="requires_approval" if status == "awaiting_approval" else "allow",
            risk_level="low",
            status=status,
            dispatch_key=f"fuzz-{n}",
        )
    _, token = AuthToken.objects.create(user=user, expiry=None)
    print(token)


if __name__ == "__main__":
    main()
