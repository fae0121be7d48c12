"""Provider API: GET providers, PUT …/config, POST …/credentials, POST …/check."""

from __future__ import annotations

import pytest

from ccdash.models import AuditLog
from connectors.models import HealthStatus, ProviderConfig, ProviderCredential
from connectors.registry import REGISTRY
from tests.conftest import client_for
from tests.factories import MembershipFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

API_KEY = "fk-live-Qw3rTy9UiOp4AsDf"


def providers_url(project) -> str:
    return f"/api/execution/providers?projectId={project.pk}"


def config_url(provider_id: str) -> str:
    return f"/api/execution/providers/{provider_id}/config"


def credentials_url(provider_id: str) -> str:
    return f"/api/execution/providers/{provider_id}/credentials"


def check_url(provider_id: str) -> str:
    return f"/api/execution/providers/{provider_id}/check"


def entry(response, provider_id: str) -> dict:
    return next(p for p in response.json() if p["id"] == provider_id)


def set_key(client, project, value: str = API_KEY):
    return client.post(
        credentials_url("fake"),
        {"projectId": project.pk, "credentials": {"apiKey": value}},
        format="json",
    )


# --- GET providers ------------------------------------------------------------------------


def test_list_shows_local_first_then_every_registered_provider(admin_client, project, fake):
    response = admin_client.get(providers_url(project))

    assert response.status_code == 200
    ids = [p["id"] for p in response.json()]
    assert ids[0] == "local"
    assert sorted(ids) == sorted(REGISTRY)
    assert "fake" in ids


def test_list_shows_capabilities_in_camel_case(admin_client, project, fake):
    local = entry(admin_client.get(providers_url(project)), "local")

    assert local["capabilities"] == {
        "supportsStreaming": True,
        "supportsCancel": True,
        "supportsArtifacts": False,
        "supportsResume": False,
        "supportsFollowUp": False,
    }
    assert local["inputKind"] == "command"
    assert local["kind"] == "local"
    assert local["label"] == "Local executor"


def test_local_is_always_enabled_configured_and_default_of_a_new_project(admin_client, project):
    local = entry(admin_client.get(providers_url(project)), "local")

    assert local["enabled"] is True
    assert local["configured"] is True
    assert local["isDefault"] is True
    assert local["health"] == {"status": "unknown", "checkedAt": None, "message": ""}


def test_unconfigured_external_provider_is_listed_disabled_and_not_configured(
    admin_client, project, fake
):
    provider = entry(admin_client.get(providers_url(project)), "fake")

    assert provider["kind"] == "external"
    assert provider["enabled"] is False
    assert provider["configured"] is False
    assert provider["isDefault"] is False
    assert provider["settings"] == {}
    assert provider["credentials"] == {
        "configured": False,
        "fields": [{"name": "apiKey", "label": "API key", "set": False, "preview": ""}],
        "updatedAt": None,
    }


def test_list_declares_settings_and_secret_fields_for_forms(admin_client, project, fake):
    provider = entry(admin_client.get(providers_url(project)), "fake")

    assert provider["settingsFields"] == [
        {
            "name": "baseUrl",
            "label": "Base URL",
            "kind": "url",
            "required": False,
            "default": "https://fake-provider.invalid",
            "helpText": "Where the fake provider pretends to live.",
        }
    ]
    assert [f["name"] for f in provider["secretFields"]] == ["apiKey"]
    assert provider["secretFields"][0]["required"] is True


def test_list_shows_config_state_health_and_masked_credentials(admin_client, project, fake):
    admin_client.put(
        config_url("fake"),
        {"projectId": project.pk, "enabled": True, "settings": {}, "rolloutPercent": 40},
        format="json",
    )
    set_key(admin_client, project)
    admin_client.post(check_url("fake"), {"projectId": project.pk}, format="json")

    provider = entry(admin_client.get(providers_url(project)), "fake")

    assert provider["configured"] is True
    assert provider["enabled"] is True
    assert provider["rolloutPercent"] == 40
    assert provider["allowFallbackToLocal"] is True
    assert provider["settings"] == {"baseUrl": "https://fake-provider.invalid"}
    assert provider["health"]["status"] == "healthy"
    assert provider["health"]["checkedAt"]
    assert provider["credentials"]["configured"] is True
    assert provider["credentials"]["fields"][0]["set"] is True
    assert provider["credentials"]["fields"][0]["preview"] == "••••AsDf"
    assert provider["credentials"]["updatedAt"]
    assert API_KEY not in str(provider)


def test_viewer_may_list_providers(viewer, project):
    assert client_for(viewer).get(providers_url(project)).status_code == 200


def test_list_without_project_id_is_400_on_project_id(admin_client):
    response = admin_client.get("/api/execution/providers")

    assert response.status_code == 400
    assert "projectId" in response.json()["error"]["fields"]


def test_list_of_another_projects_providers_is_404(admin_client):
    other = ProjectFactory()

    response = admin_client.get(providers_url(other))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_anonymous_caller_is_401(anon_client, project):
    assert anon_client.get(providers_url(project)).status_code == 401


# --- PUT config ---------------------------------------------------------------------------


def test_admin_sets_config_and_gets_the_provider_back(admin_client, project, fake):
    response = admin_client.put(
        config_url("fake"),
        {
            "projectId": project.pk,
            "enabled": True,
            "allowFallbackToLocal": False,
            "rolloutPercent": 25,
            "settings": {"baseUrl": "https://fake.example.test/api"},
        },
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "fake"
    assert body["enabled"] is True
    assert body["allowFallbackToLocal"] is False
    config = ProviderConfig.objects.get(project=project, provider_id="fake")
    assert config.settings == {"baseUrl": "https://fake.example.test/api"}
    assert config.rollout_percent == 25
    assert config.allow_fallback_to_local is False


def test_config_change_is_audited(admin_client, admin_member, project, fake):
    admin_client.put(config_url("fake"), {"projectId": project.pk, "enabled": True}, format="json")

    log = AuditLog.objects.get(project=project, action="provider_config_updated")
    assert log.actor == admin_member.username
    assert log.payload["providerId"] == "fake"
    assert log.payload["enabled"] is True


def test_invalid_settings_answer_400_with_the_adapters_field_errors(admin_client, project, fake):
    response = admin_client.put(
        config_url("fake"),
        {"projectId": project.pk, "enabled": True, "settings": {"baseUrl": "ftp://nope"}},
        format="json",
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_config"
    assert error["fields"] == {"settings": {"baseUrl": ["Must be an http(s) URL."]}}
    assert not ProviderConfig.objects.filter(project=project, provider_id="fake").exists()


def test_unknown_setting_answers_400_naming_it(admin_client, project, fake):
    response = admin_client.put(
        config_url("fake"),
        {"projectId": project.pk, "settings": {"colour": "blue"}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["settings"] == {"colour": ["Unknown setting."]}


def test_rollout_outside_0_to_100_is_400(admin_client, project, fake):
    response = admin_client.put(
        config_url("fake"), {"projectId": project.pk, "rolloutPercent": 101}, format="json"
    )

    assert response.status_code == 400
    assert "rolloutPercent" in response.json()["error"]["fields"]


def test_omitted_config_fields_keep_their_stored_values(admin_client, project, fake):
    admin_client.put(
        config_url("fake"),
        {"projectId": project.pk, "enabled": True, "settings": {"baseUrl": "https://a.test"}},
        format="json",
    )

    admin_client.put(
        config_url("fake"), {"projectId": project.pk, "isDefault": True}, format="json"
    )

    config = ProviderConfig.objects.get(project=project, provider_id="fake")
    assert config.enabled is True
    assert config.settings == {"baseUrl": "https://a.test"}


def test_is_default_moves_the_project_default(admin_client, project, fake):
    admin_client.put(
        config_url("fake"),
        {"projectId": project.pk, "enabled": True, "isDefault": True},
        format="json",
    )
    project.refresh_from_db()
    assert project.default_provider_id == "fake"
    listed = admin_client.get(providers_url(project))
    assert entry(listed, "fake")["isDefault"] is True
    assert entry(listed, "local")["isDefault"] is False

    admin_client.put(
        config_url("local"), {"projectId": project.pk, "isDefault": True}, format="json"
    )

    project.refresh_from_db()
    assert project.default_provider_id == "local"
    assert not ProviderConfig.objects.get(project=project, provider_id="fake").is_default


def test_unsetting_the_default_returns_the_project_to_local(admin_client, project, fake):
    admin_client.put(
        config_url("fake"), {"projectId": project.pk, "isDefault": True}, format="json"
    )

    admin_client.put(
        config_url("fake"), {"projectId": project.pk, "isDefault": False}, format="json"
    )

    project.refresh_from_db()
    assert project.default_provider_id == "local"


def test_local_cannot_be_disabled(admin_client, project):
    response = admin_client.put(
        config_url("local"), {"projectId": project.pk, "enabled": False}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["enabled"] is True


@pytest.mark.parametrize("role", ["viewer", "operator", "approver"])
def test_only_a_project_admin_may_configure(role, project, fake):
    user = UserFactory(username=f"u-{role}")
    MembershipFactory(project=project, user=user, role=role)

    response = client_for(user).put(
        config_url("fake"), {"projectId": project.pk, "enabled": True}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"


def test_configuring_another_projects_provider_is_404(admin_client, fake):
    other = ProjectFactory()

    response = admin_client.put(
        config_url("fake"), {"projectId": other.pk, "enabled": True}, format="json"
    )

    assert response.status_code == 404
    assert not ProviderConfig.objects.filter(project=other).exists()


def test_unknown_provider_is_404_unknown_provider(admin_client, project):
    for method, url in [
        ("put", config_url("nope")),
        ("post", credentials_url("nope")),
        ("post", check_url("nope")),
    ]:
        response = getattr(admin_client, method)(url, {"projectId": project.pk}, format="json")
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "unknown_provider"


def test_anonymous_cannot_configure(anon_client, project, fake):
    response = anon_client.put(config_url("fake"), {"projectId": project.pk}, format="json")

    assert response.status_code == 401


# --- POST credentials -------------------------------------------------------------------------


def test_credentials_answer_masked_metadata_only(admin_client, project, fake):
    response = set_key(admin_client, project)

    assert response.status_code == 200
    body = response.json()
    assert body["configured"] is True
    assert body["fields"] == [
        {"name": "apiKey", "label": "API key", "set": True, "preview": "••••AsDf"}
    ]
    assert body["updatedAt"]
    assert API_KEY not in response.content.decode()


def test_credentials_are_stored_encrypted_for_the_project(
    admin_client, admin_member, project, fake
):
    set_key(admin_client, project)

    credential = ProviderCredential.objects.get(config__project=project, config__provider_id="fake")
    assert credential.values == {"apiKey": API_KEY}
    assert credential.updated_by == admin_member


def test_absent_key_keeps_and_empty_string_clears(admin_client, project, fake):
    set_key(admin_client, project)

    kept = admin_client.post(
        credentials_url("fake"), {"projectId": project.pk, "credentials": {}}, format="json"
    )
    assert kept.json()["fields"][0]["set"] is True

    cleared = admin_client.post(
        credentials_url("fake"),
        {"projectId": project.pk, "credentials": {"apiKey": ""}},
        format="json",
    )
    assert cleared.status_code == 200
    assert cleared.json()["configured"] is False
    assert cleared.json()["fields"][0]["set"] is False
    assert ProviderCredential.objects.get(config__project=project).values == {}


def test_unknown_credential_field_is_400_without_echoing_values(admin_client, project, fake):
    response = admin_client.post(
        credentials_url("fake"),
        {"projectId": project.pk, "credentials": {"apiKey": API_KEY, "password": API_KEY}},
        format="json",
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_credentials"
    assert error["fields"] == {"credentials": {"password": ["Unknown credential field."]}}
    assert API_KEY not in response.content.decode()
    assert not ProviderCredential.objects.exists()


def test_non_string_credential_is_400(admin_client, project, fake):
    response = admin_client.post(
        credentials_url("fake"),
        {"projectId": project.pk, "credentials": {"apiKey": 12345678}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["fields"]["credentials"] == {"apiKey": ["Must be a string."]}


def test_credential_change_is_audited_by_field_name(admin_client, admin_member, project, fake):
    set_key(admin_client, project)

    log = AuditLog.objects.get(project=project, action="provider_credentials_updated")
    assert log.actor == admin_member.username
    assert log.payload == {"providerId": "fake", "setFields": ["apiKey"], "clearedFields": []}
    assert API_KEY not in log.message


def test_operator_may_not_write_credentials(operator_client, project, fake):
    response = set_key(operator_client, project)

    assert response.status_code == 403
    assert not ProviderCredential.objects.exists()


def test_writing_another_projects_credentials_is_404(admin_client, fake):
    other = ProjectFactory()

    assert set_key(admin_client, other).status_code == 404


# --- POST check ---------------------------------------------------------------------------------


def test_admin_checks_a_healthy_provider(admin_client, project, fake):
    set_key(admin_client, project)

    response = admin_client.post(check_url("fake"), {"projectId": project.pk}, format="json")

    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
    assert response.json()["checkedAt"]
    config = ProviderConfig.objects.get(project=project, provider_id="fake")
    assert config.health_status == HealthStatus.HEALTHY
    assert fake.health_calls == 1


def test_failing_check_is_stored_with_the_secret_scrubbed(admin_client, project, fake):
    set_key(admin_client, project)
    fake.fail_next("auth", operations=("check_health",), echo_secret=True)

    response = admin_client.post(check_url("fake"), {"projectId": project.pk}, format="json")

    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "failing"
    assert "rejected the API key" in health["message"]
    assert API_KEY not in health["message"]
    config = ProviderConfig.objects.get(project=project, provider_id="fake")
    assert config.health_status == HealthStatus.FAILING
    assert API_KEY not in config.health_message


def test_check_with_invalid_stored_settings_fails_without_calling_the_provider(
    admin_client, project, fake
):
    ProviderConfig.objects.create(project=project, provider_id="fake", settings={"baseUrl": 3})

    response = admin_client.post(check_url("fake"), {"projectId": project.pk}, format="json")

    assert response.json()["status"] == "failing"
    assert "baseUrl" in response.json()["message"]
    assert fake.health_calls == 0


def test_local_check_is_healthy(admin_client, project):
    response = admin_client.post(check_url("local"), {"projectId": project.pk}, format="json")

    assert response.json()["status"] == "healthy"


def test_operator_may_not_check_since_a_check_sends_the_stored_credentials(
    admin_client, operator_client, project, fake
):
    set_key(admin_client, project)

    response = operator_client.post(check_url("fake"), {"projectId": project.pk}, format="json")

    assert response.status_code == 403
    assert fake.health_calls == 0


def test_viewer_may_not_check(viewer, project, fake):
    response = client_for(viewer).post(check_url("fake"), {"projectId": project.pk}, format="json")

    assert response.status_code == 403
    assert fake.health_calls == 0


def test_checking_another_projects_provider_is_404(admin_client, fake):
    other = ProjectFactory()

    response = admin_client.post(check_url("fake"), {"projectId": other.pk}, format="json")

    assert response.status_code == 404


def test_a_provider_without_secret_fields_counts_as_having_its_credentials(project):
    from connectors.configs import masked_credentials

    assert masked_credentials("local", None)["configured"] is True
