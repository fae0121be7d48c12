"""The demo set-up that ``make run`` performs: an admin user, a demo project
with its workspace, and every external provider configured against its local
simulator (each simulator declares its port, fake token and demo settings), so
a new user can launch a run on each provider from the first minute. Idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from ccdash.models import Membership, Project
from connectors.models import ProviderConfig, ProviderCredential
from connectors.registry import REGISTRY
from connectors.simulators import simulator_classes

DEMO_USERNAME = "admin"
DEMO_PASSWORD = "admin"
DEMO_PROJECT = "Demo project"


@dataclass(frozen=True)
class DemoInfo:
    username: str
    password: str
    project_id: int
    workspace: Path
    providers: tuple[str, ...]


@transaction.atomic
def ensure_demo(simulator_host: str = "127.0.0.1") -> DemoInfo:
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    if created:
        user.set_password(DEMO_PASSWORD)
        user.save()
    # Inside the workspaces root, like every project's (ccdash.workspaces).
    workspace = Path(settings.EXECUTION_WORKSPACES_ROOT) / "demo"
    workspace.mkdir(parents=True, exist_ok=True)
    project, _ = Project.objects.get_or_create(
        name=DEMO_PROJECT, defaults={"workspace_root": str(workspace)}
    )
    Membership.objects.get_or_create(project=project, user=user, defaults={"role": "admin"})
    configured = []
    for provider_id, simulator in simulator_classes().items():
        adapter = REGISTRY[provider_id]
        settings_ = adapter.validate_config(
            {
                **simulator.demo_settings,
                "baseUrl": f"http://{simulator_host}:{simulator.default_port}",
            }
        )
        config, _ = ProviderConfig.objects.update_or_create(
            project=project,
            provider_id=provider_id,
            defaults={"enabled": True, "settings": settings_},
        )
        credential, _ = ProviderCredential.objects.get_or_create(config=config)
        credential.values = simulator.demo_credentials()
        credential.save()
        configured.append(provider_id)
    return DemoInfo(DEMO_USERNAME, DEMO_PASSWORD, project.pk, workspace, tuple(configured))
