"""Admin actions that act ("Check health", "Reconcile now") need the change
permission: staff who may only view neither see nor run them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from connectors.models import ProviderConfig
from execution import reconciler
from tests.factories import RunFactory, UserFactory

pytestmark = pytest.mark.django_db

CONFIGS = "/admin/connectors/providerconfig/"
RUNS = "/admin/execution/run/"


def staff_with(*codenames: str) -> Client:
    user = UserFactory(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def config(project) -> ProviderConfig:
    return ProviderConfig.objects.create(
        project=project,
        provider_id="github_actions",
        enabled=True,
        settings={"baseUrl": "https://api.github.com", "owner": "o", "repo": "r"},
    )


@pytest.fixture
def health_checks(monkeypatch) -> list:
    from connectors import admin as connectors_admin

    calls: list = []

    def record(config, actor=""):
        calls.append((config.pk, actor))
        return {"status": "healthy", "message": ""}

    monkeypatch.setattr(connectors_admin.services, "check_health", record)
    return calls


@pytest.fixture
def reconciles(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(
        reconciler, "reconcile_run", lambda run_id, actor="system": calls.append(run_id)
    )
    return calls


def test_view_only_staff_do_not_get_check_health(config, health_checks):
    client = staff_with("view_providerconfig")

    page = client.get(CONFIGS)
    posted = client.post(CONFIGS, {"action": "check_health", "_selected_action": [config.pk]})

    assert page.status_code == 200
    assert 'value="check_health"' not in page.content.decode()
    assert posted.status_code in (200, 302, 403)
    assert health_checks == []
    config.refresh_from_db()
    assert config.health_checked_at is None


def test_staff_with_change_permission_run_check_health(config, health_checks):
    client = staff_with("view_providerconfig", "change_providerconfig")

    assert 'value="check_health"' in client.get(CONFIGS).content.decode()
    client.post(CONFIGS, {"action": "check_health", "_selected_action": [config.pk]})

    assert [pk for pk, _ in health_checks] == [config.pk]


def test_view_only_staff_do_not_get_reconcile_now(project, reconciles):
    run = RunFactory(project=project)
    client = staff_with("view_run")

    page = client.get(RUNS)
    posted = client.post(RUNS, {"action": "reconcile_now", "_selected_action": [run.pk]})

    assert page.status_code == 200
    assert 'value="reconcile_now"' not in page.content.decode()
    assert posted.status_code in (200, 302, 403)
    assert reconciles == []


def test_staff_with_change_permission_reconcile_now(project, reconciles):
    run = RunFactory(project=project)
    client = staff_with("view_run", "change_run")

    assert 'value="reconcile_now"' in client.get(RUNS).content.decode()
    client.post(RUNS, {"action": "reconcile_now", "_selected_action": [run.pk]})

    assert reconciles == [run.pk]
