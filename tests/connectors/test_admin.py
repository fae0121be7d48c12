"""Django admin as the settings and credential UI, and the run and project consoles."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from ccdash.models import AuditLog
from connectors.models import HealthStatus, ProviderConfig, ProviderCredential
from execution import reconciler
from execution.models import RunEvent
from tests.factories import MembershipFactory, RunFactory, UserFactory

pytestmark = pytest.mark.django_db

API_KEY = "adm-key-Hn7Vb3Xc5Zk2Lm9Q"
CONFIGS = "/admin/connectors/providerconfig/"


@pytest.fixture
def superuser():
    user = UserFactory(username="root")
    user.is_staff = user.is_superuser = True
    user.save()
    return user


@pytest.fixture
def staff(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def config(project, fake) -> ProviderConfig:
    config = ProviderConfig.objects.create(
        project=project,
        provider_id="fake",
        enabled=True,
        settings={"baseUrl": "https://fake.example.test"},
    )
    credential = ProviderCredential(config=config)
    credential.values = {"apiKey": API_KEY}
    credential.save()
    return config


def change_form_data(config: ProviderConfig, **overrides) -> dict[str, str]:
    """What the browser posts for the config change form and its credential inline."""
    credential = ProviderCredential.objects.filter(config=config).first()
    data = {
        "enabled": "on",
        "allow_fallback_to_local": "on",
        "rollout_percent": "100",
        "settings": json.dumps(config.settings),
        "credential-TOTAL_FORMS": "1",
        "credential-INITIAL_FORMS": "1" if credential else "0",
        "credential-MIN_NUM_FORMS": "0",
        "credential-MAX_NUM_FORMS": "1",
        "credential-0-id": str(credential.pk) if credential else "",
        "credential-0-config": str(config.pk),
        "credential-0-secret_apiKey": "",
        "_save": "Save",
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def stored_key(config: ProviderConfig) -> dict[str, str]:
    return ProviderCredential.objects.get(config=config).values


# --- provider configs ----------------------------------------------------------------------


def test_changelist_shows_health_and_credential_status(staff, config):
    ProviderConfig.objects.filter(pk=config.pk).update(health_status=HealthStatus.FAILING)

    page = staff.get(CONFIGS).content.decode()

    assert "Fake provider (fake)" in page
    assert "Failing" in page
    assert ">set<" in page
    assert API_KEY not in page


def test_change_form_has_an_empty_password_input_per_secret_field(staff, config):
    page = staff.get(f"{CONFIGS}{config.pk}/change/").content.decode()

    assert 'type="password" name="credential-0-secret_apiKey"' in page
    assert 'name="credential-0-clear_apiKey"' in page
    assert "••••" + API_KEY[-4:] in page  # the masked preview
    assert API_KEY not in page


def test_blank_secret_input_keeps_the_stored_value(staff, config):
    response = staff.post(f"{CONFIGS}{config.pk}/change/", change_form_data(config))

    assert response.status_code == 302
    assert stored_key(config) == {"apiKey": API_KEY}
    assert not AuditLog.objects.filter(action="provider_credentials_updated").exists()


def test_new_secret_value_replaces_the_stored_one_and_is_audited(staff, superuser, config):
    data = change_form_data(config, **{"credential-0-secret_apiKey": "new-key-123456789"})

    response = staff.post(f"{CONFIGS}{config.pk}/change/", data)

    assert response.status_code == 302
    assert stored_key(config) == {"apiKey": "new-key-123456789"}
    credential = ProviderCredential.objects.get(config=config)
    assert credential.updated_by == superuser
    log = AuditLog.objects.get(action="provider_credentials_updated")
    assert log.payload["setFields"] == ["apiKey"]
    assert "new-key-123456789" not in log.message


def test_clear_box_removes_the_stored_value(staff, config):
    data = change_form_data(config, **{"credential-0-clear_apiKey": "on"})

    response = staff.post(f"{CONFIGS}{config.pk}/change/", data)

    assert response.status_code == 302
    assert stored_key(config) == {}


def test_first_credential_is_created_from_the_inline(staff, project, fake):
    config = ProviderConfig.objects.create(project=project, provider_id="fake")
    data = change_form_data(config, **{"credential-0-secret_apiKey": API_KEY})

    response = staff.post(f"{CONFIGS}{config.pk}/change/", data)

    assert response.status_code == 302
    assert stored_key(config) == {"apiKey": API_KEY}


def test_invalid_settings_show_the_adapters_errors_on_the_form(staff, config):
    data = change_form_data(config, settings=json.dumps({"baseUrl": "ftp://x", "colour": 1}))

    response = staff.post(f"{CONFIGS}{config.pk}/change/", data)

    assert response.status_code == 200
    page = response.content.decode()
    assert "baseUrl: Must be an http(s) URL." in page
    assert "colour: Unknown setting." in page
    config.refresh_from_db()
    assert config.settings == {"baseUrl": "https://fake.example.test"}


def test_settings_are_stored_cleaned_by_the_adapter(staff, config):
    response = staff.post(f"{CONFIGS}{config.pk}/change/", change_form_data(config, settings="{}"))

    assert response.status_code == 302
    config.refresh_from_db()
    assert config.settings == {"baseUrl": "https://fake-provider.invalid"}


def test_marking_default_in_the_admin_moves_the_project_default(staff, config, project):
    response = staff.post(
        f"{CONFIGS}{config.pk}/change/", change_form_data(config, is_default="on")
    )

    assert response.status_code == 302
    project.refresh_from_db()
    assert project.default_provider_id == "fake"


def test_add_form_offers_every_registered_provider(staff, fake):
    page = staff.get(f"{CONFIGS}add/").content.decode()

    assert '<option value="local">' in page
    assert '<option value="fake">' in page


def test_check_health_action_stores_the_outcome(staff, config, fake):
    fake.fail_next("auth", operations=("check_health",), echo_secret=True)

    response = staff.post(
        CONFIGS, {"action": "check_health", "_selected_action": [config.pk]}, follow=True
    )

    config.refresh_from_db()
    assert config.health_status == HealthStatus.FAILING
    assert config.health_checked_at is not None
    page = response.content.decode()
    assert "failing" in page
    assert API_KEY not in page
    assert API_KEY not in config.health_message


# --- runs and projects ----------------------------------------------------------------------


def test_run_changelist_shows_status_sync_provider_and_degraded(staff, project):
    RunFactory(project=project, provider_id="fake", status="running", sync_status="stale")

    page = staff.get("/admin/execution/run/").content.decode()

    assert "stale" in page
    assert "running" in page
    assert "icon-yes.svg" in page  # degraded: active and not in sync


def test_run_page_shows_its_system_events_read_only(staff, project):
    run = RunFactory(project=project)
    RunEvent.objects.create(
        run=run,
        sequence_no=1,
        stream="system",
        event_type="dispatched",
        text="Sent to Fake",
        occurred_at=run.created_at,
    )

    page = staff.get(f"/admin/execution/run/{run.pk}/change/").content.decode()

    assert "Sent to Fake" in page
    assert 'name="_save"' not in page


def test_reconcile_now_calls_the_reconciler_for_each_selected_run(staff, project, monkeypatch):
    runs = [RunFactory(project=project), RunFactory(project=project)]
    called = []
    monkeypatch.setattr(
        reconciler, "reconcile_run", lambda run_id, actor="system": called.append((run_id, actor))
    )

    response = staff.post(
        "/admin/execution/run/",
        {"action": "reconcile_now", "_selected_action": [r.pk for r in runs]},
        follow=True,
    )

    assert sorted(called) == sorted((r.pk, "root") for r in runs)
    assert "Reconciled 2 run(s)." in response.content.decode()


def test_project_page_shows_members_inline(staff, project):
    MembershipFactory(project=project, user=UserFactory(username="alice"), role="approver")

    page = staff.get(f"/admin/ccdash/project/{project.pk}/change/").content.decode()

    assert "alice" in page
    assert "approver" in page
    assert "Audit log" in page


def test_audit_log_is_read_only(staff, project):
    AuditLog.objects.create(project=project, actor="x", action="provider_config_updated")

    assert staff.get("/admin/ccdash/auditlog/").status_code == 200
    assert staff.get("/admin/ccdash/auditlog/add/").status_code == 403
