"""Credentials are bound to their endpoint.

A project admin sees only ``••••abcd`` of a token someone else set. Pointing
``baseUrl`` at a listener of their own and pressing "check" must not deliver
that token: the host must be allowed, and moving the endpoint clears the
stored credentials unless new ones come with the move.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client

from ccdash.models import AuditLog
from connectors.configs import credential_values
from connectors.endpoints import EndpointNotAllowed, check_base_url, guard_request
from connectors.models import ProviderConfig, ProviderCredential
from tests.conftest import client_for
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

OLD_TOKEN = "sim-old-token-Qw3Er5Ty7Ui9"
NEW_TOKEN = "sim-new-token-As2Df4Gh6Jk8"
GITHUB = {"owner": "ccdash", "repo": "demo", "workflow": "agent.yml", "ref": "main"}


class Listener:
    """A loopback HTTP server that records every request it receives."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length).decode(errors="replace"),
                    }
                )
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"message": "Bad credentials"}')

            do_GET = do_POST = _record

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def saw(self, secret: str) -> bool:
        return any(secret in json.dumps(r) for r in self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def github(project, admin_client):
    """GitHub Actions on its public API with a token set by the project admin."""
    url = "/api/execution/providers/github_actions"
    assert (
        admin_client.put(
            f"{url}/config",
            {"projectId": project.pk, "enabled": True, "settings": GITHUB},
            format="json",
        ).status_code
        == 200
    )
    assert (
        admin_client.post(
            f"{url}/credentials",
            {"projectId": project.pk, "credentials": {"token": OLD_TOKEN}},
            format="json",
        ).status_code
        == 200
    )
    return ProviderConfig.objects.get(project=project, provider_id="github_actions")


def put_config(client, project, **body):
    return client.put(
        "/api/execution/providers/github_actions/config",
        {"projectId": project.pk, **body},
        format="json",
    )


def check(client, project):
    return client.post(
        "/api/execution/providers/github_actions/check", {"projectId": project.pk}, format="json"
    )


def stored_token(config: ProviderConfig) -> str | None:
    config = ProviderConfig.objects.select_related("credential").get(pk=config.pk)
    return credential_values(config).get("token")


# --- the attack of the security review ---------------------------------------------------


def test_a_listener_host_that_is_not_allowed_is_a_400_and_changes_nothing(
    settings, project, admin_client, github, listener
):
    settings.CONNECTORS_ALLOWED_HOSTS = []

    response = put_config(admin_client, project, settings={**GITHUB, "baseUrl": listener.url})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "host_not_allowed"
    assert "baseUrl" in error["fields"]["settings"]
    github.refresh_from_db()
    assert github.settings["baseUrl"] == "https://api.github.com"
    assert stored_token(github) == OLD_TOKEN
    assert listener.requests == []


def test_moving_to_an_allowed_host_without_new_credentials_clears_them(
    settings, project, admin_client, github, listener
):
    settings.CONNECTORS_ALLOWED_HOSTS = ["127.0.0.1"]

    response = put_config(admin_client, project, settings={**GITHUB, "baseUrl": listener.url})
    health = check(admin_client, project).json()

    assert response.status_code == 200
    assert response.json()["credentials"]["configured"] is False
    assert stored_token(github) is None
    assert health["status"] == "failing"
    assert not listener.saw(OLD_TOKEN)
    audit = AuditLog.objects.get(project=project, action="provider_credentials_cleared")
    assert audit.payload["clearedFields"] == ["token"]
    assert audit.payload["toEndpoint"] == listener.url
    assert OLD_TOKEN not in json.dumps(audit.payload) + audit.message


def test_new_credentials_sent_with_the_move_replace_the_old_ones(
    settings, project, admin_client, github, listener
):
    settings.CONNECTORS_ALLOWED_HOSTS = ["127.0.0.1"]

    response = put_config(
        admin_client,
        project,
        settings={**GITHUB, "baseUrl": listener.url},
        credentials={"token": NEW_TOKEN},
    )
    check(admin_client, project)

    assert response.status_code == 200
    assert stored_token(github) == NEW_TOKEN
    assert listener.saw(NEW_TOKEN)
    assert not listener.saw(OLD_TOKEN)
    assert AuditLog.objects.filter(project=project, action="provider_credentials_rebound").exists()


def test_a_new_port_on_the_same_host_is_a_new_endpoint(settings, project, admin_client, listener):
    settings.CONNECTORS_ALLOWED_HOSTS = ["127.0.0.1"]
    put_config(admin_client, project, settings={**GITHUB, "baseUrl": "http://127.0.0.1:9"})
    admin_client.post(
        "/api/execution/providers/github_actions/credentials",
        {"projectId": project.pk, "credentials": {"token": OLD_TOKEN}},
        format="json",
    )
    config = ProviderConfig.objects.get(project=project, provider_id="github_actions")

    put_config(admin_client, project, settings={**GITHUB, "baseUrl": listener.url})
    check(admin_client, project)

    assert stored_token(config) is None
    assert not listener.saw(OLD_TOKEN)


def test_changing_other_settings_keeps_the_credentials(project, admin_client, github):
    response = put_config(admin_client, project, settings={**GITHUB, "repo": "other"})

    assert response.status_code == 200
    assert stored_token(github) == OLD_TOKEN
    assert not AuditLog.objects.filter(action="provider_credentials_cleared").exists()


def test_invalid_credentials_sent_with_a_move_store_nothing(
    settings, project, admin_client, github, listener
):
    settings.CONNECTORS_ALLOWED_HOSTS = ["127.0.0.1"]

    response = put_config(
        admin_client,
        project,
        settings={**GITHUB, "baseUrl": listener.url},
        credentials={"bogus": "x"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_credentials"
    github.refresh_from_db()
    assert github.settings["baseUrl"] == "https://api.github.com"
    assert stored_token(github) == OLD_TOKEN


def test_the_admin_form_clears_credentials_when_the_endpoint_moves(
    settings, project, github, listener
):
    settings.CONNECTORS_ALLOWED_HOSTS = ["127.0.0.1"]
    root = UserFactory(username="root", is_staff=True, is_superuser=True)
    staff = Client()
    staff.force_login(root)
    credential = ProviderCredential.objects.get(config=github)

    response = staff.post(
        f"/admin/connectors/providerconfig/{github.pk}/change/",
        {
            "enabled": "on",
            "allow_fallback_to_local": "on",
            "rollout_percent": "100",
            "settings": json.dumps({**github.settings, "baseUrl": listener.url}),
            "credential-TOTAL_FORMS": "1",
            "credential-INITIAL_FORMS": "1",
            "credential-MIN_NUM_FORMS": "0",
            "credential-MAX_NUM_FORMS": "1",
            "credential-0-id": str(credential.pk),
            "credential-0-config": str(github.pk),
        },
    )

    assert response.status_code == 302, response.content[:2000]
    assert stored_token(github) is None
    assert AuditLog.objects.filter(action="provider_credentials_cleared").exists()


# --- the health check sends credentials: project admins only --------------------------------


def test_an_operator_cannot_trigger_a_check(project, github, operator_client):
    assert check(operator_client, project).status_code == 403


# --- the rules themselves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://api.github.com", True),
        ("https://API.GitHub.com:443/", True),
        ("http://api.github.com", False),
        ("https://api.github.com.evil.test", False),
        ("https://ghe.corp.test/api/v3", False),
        ("https://10.0.0.5", False),
        ("http://127.0.0.1:8399", False),
        ("http://[::1]:8399", False),
    ],
)
def test_without_an_allowlist_only_the_public_api_over_https(settings, url, allowed):
    settings.CONNECTORS_ALLOWED_HOSTS = []
    if allowed:
        check_base_url(url, ("api.github.com",))
    else:
        with pytest.raises(EndpointNotAllowed):
            check_base_url(url, ("api.github.com",))


@pytest.mark.parametrize(
    ("allowlist", "url", "allowed"),
    [
        (["ghe.corp.test"], "https://ghe.corp.test/api/v3", True),
        (["ghe.corp.test"], "http://ghe.corp.test/api/v3", False),  # https unless loopback
        (["127.0.0.1:8701"], "http://127.0.0.1:8701", True),
        (["127.0.0.1:8701"], "http://127.0.0.1:8399", False),
        (["127.0.0.1"], "http://127.0.0.1:8399", True),
        (["localhost"], "http://localhost:8399", True),
    ],
)
def test_the_operator_allowlist(settings, allowlist, url, allowed):
    settings.CONNECTORS_ALLOWED_HOSTS = allowlist
    if allowed:
        check_base_url(url, ("api.github.com",))
    else:
        with pytest.raises(EndpointNotAllowed):
            check_base_url(url, ("api.github.com",))


def test_a_public_host_that_resolves_to_loopback_is_refused_before_sending(
    settings, monkeypatch, project, admin_client, github, listener
):
    """DNS is checked when the request goes out: a rebinding answer is caught."""
    settings.CONNECTORS_ALLOWED_HOSTS = []
    monkeypatch.setattr(
        "connectors.endpoints._resolved", {}
    )  # no answer remembered from other tests
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port, *a, **k: [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))
        ],
    )

    with pytest.raises(EndpointNotAllowed, match="non-public"):
        guard_request("https://api.github.com/repos/x", ("api.github.com",))
    health = check(admin_client, project).json()

    assert health["status"] == "failing"
    assert "non-public" in health["message"]


def test_a_stored_endpoint_no_longer_allowed_is_never_called(
    settings, project, admin_client, github, listener
):
    """The allowlist is enforced per request, not only when settings are saved."""
    ProviderConfig.objects.filter(pk=github.pk).update(
        settings={**github.settings, "baseUrl": listener.url}
    )
    settings.CONNECTORS_ALLOWED_HOSTS = []

    health = check(admin_client, project).json()

    assert health["status"] == "failing"
    assert "not allowed" in health["message"]
    assert listener.requests == []


def test_viewer_cannot_learn_anything_by_moving_the_endpoint(project, viewer, github, listener):
    response = put_config(client_for(viewer), project, settings={**GITHUB, "baseUrl": listener.url})

    assert response.status_code == 403
    assert stored_token(github) == OLD_TOKEN
