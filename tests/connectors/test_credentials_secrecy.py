"""Acceptance 2: credentials are ciphertext at rest, and their value appears in
no API response, admin page, run event, audit entry, log record or error
message, even when the provider echoes the credential back in its errors."""

from __future__ import annotations

import logging

import pytest
from django.db import connection
from django.test import Client

from ccdash.models import AuditLog
from connectors.models import ProviderCircuit, ProviderConfig, ProviderCredential
from execution.models import Run, RunEvent
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

SECRET = "sk-live-SECRETVALUE-4f9c2a7e1b"


def raw_payload(credential_pk: int) -> bytes:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT payload FROM connectors_providercredential WHERE id = %s", [credential_pk]
        )
        (value,) = cursor.fetchone()
    return bytes(value)


def test_credential_column_holds_ciphertext(admin_client, project, fake):
    response = admin_client.post(
        "/api/execution/providers/fake/credentials",
        {"projectId": project.pk, "credentials": {"apiKey": SECRET}},
        format="json",
    )
    assert response.status_code == 200

    credential = ProviderCredential.objects.get(config__project=project)
    stored = raw_payload(credential.pk)

    assert SECRET.encode() not in stored
    assert b"apiKey" not in stored
    assert stored.startswith(b"gAAAAA")  # a Fernet token
    assert credential.values == {"apiKey": SECRET}  # and it reads back through the model


class Collected:
    """Every text a user, an operator or a log reader could see."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text) -> None:
        self.texts.append((where, text if isinstance(text, str) else repr(text)))

    def response(self, where: str, response, *expected: int) -> None:
        if expected:
            assert response.status_code in expected, (where, response.status_code)
        self.add(where, response.content.decode())

    def leaks(self) -> list[str]:
        return [where for where, text in self.texts if SECRET in text]


def test_the_secret_appears_nowhere(
    admin_client, operator_client, project, fake, caplog, django_capture_on_commit_callbacks
):
    caplog.set_level(logging.DEBUG)
    seen = Collected()
    api = "/api/execution"
    pid = project.pk

    # Configure the provider and its credential through the API.
    seen.response(
        "PUT config",
        admin_client.put(
            f"{api}/providers/fake/config", {"projectId": pid, "enabled": True}, format="json"
        ),
        200,
    )
    seen.response(
        "POST credentials",
        admin_client.post(
            f"{api}/providers/fake/credentials",
            {"projectId": pid, "credentials": {"apiKey": SECRET}},
            format="json",
        ),
        200,
    )
    seen.response(
        "POST credentials (rejected)",
        admin_client.post(
            f"{api}/providers/fake/credentials",
            {"projectId": pid, "credentials": {"apiKey": SECRET, "token": SECRET}},
            format="json",
        ),
        400,
    )
    seen.response(
        "POST check (healthy)",
        admin_client.post(f"{api}/providers/fake/check", {"projectId": pid}, format="json"),
        200,
    )
    fake.fail_next("auth", operations=("check_health",), echo_secret=True)
    seen.response(
        "POST check (provider echoes the key)",
        admin_client.post(f"{api}/providers/fake/check", {"projectId": pid}, format="json"),
        200,
    )
    ProviderConfig.objects.filter(project=project, provider_id="fake").update(
        health_status="healthy"
    )

    def launch(command: str = "echo hi") -> Run:
        with django_capture_on_commit_callbacks(execute=True):
            response = operator_client.post(
                f"{api}/runs",
                {"projectId": pid, "command": command, "providerId": "fake"},
                format="json",
            )
        seen.response(f"POST runs ({command})", response, 201)
        return Run.objects.get(pk=response.json()["id"])

    # A run the provider accepts, whose output and status echo the key.
    accepted = launch()
    fake.runs[accepted.provider_run_id].logs += [f"using key {SECRET}", "working"]
    fake.runs[accepted.provider_run_id].status = "working"
    seen.response(
        "POST reconcile",
        operator_client.post(f"{api}/runs/{accepted.pk}/reconcile"),
        200,
    )
    seen.response("POST cancel", operator_client.post(f"{api}/runs/{accepted.pk}/cancel"), 200, 202)

    # A provider that answers transient errors, then auth errors, echoing the key.
    fake.fail_next("transient", echo_secret=True)
    retried = launch()
    fake.fail_next("auth", echo_secret=True)
    failed = launch()
    assert failed.status == "failed"

    for run in (accepted, retried, failed):
        seen.response(f"GET runs/{run.pk}", operator_client.get(f"{api}/runs/{run.pk}"), 200)
        seen.response(
            f"GET runs/{run.pk}/events",
            operator_client.get(f"{api}/runs/{run.pk}/events"),
            200,
        )
    seen.response("GET runs", operator_client.get(f"{api}/runs?projectId={pid}"), 200)
    seen.response("GET providers", operator_client.get(f"{api}/providers?projectId={pid}"), 200)

    # Every stored text.
    for event in RunEvent.objects.all():
        seen.add(f"event {event.run_id}#{event.sequence_no}", f"{event.text} {event.payload}")
    for run in Run.objects.all():
        seen.add(
            f"run {run.pk}",
            f"{run.status_reason} {run.last_sync_error} {run.provider_state} "
            f"{run.provider_status_raw} {run.provider_url}",
        )
    for config in ProviderConfig.objects.all():
        seen.add(f"config {config.pk}", f"{config.health_message} {config.settings}")
    for entry in AuditLog.objects.all():
        seen.add(f"audit {entry.action}", f"{entry.message} {entry.payload}")
    for breaker in ProviderCircuit.objects.all():
        seen.add(f"circuit {breaker.pk}", breaker.last_error)

    # Every admin page about them.
    root = UserFactory(username="root")
    root.is_staff = root.is_superuser = True
    root.save()
    staff = Client()
    staff.force_login(root)
    config = ProviderConfig.objects.get(project=project, provider_id="fake")
    pages = [
        "/admin/connectors/providerconfig/",
        f"/admin/connectors/providerconfig/{config.pk}/change/",
        f"/admin/connectors/providerconfig/{config.pk}/history/",
        f"/admin/connectors/providerconfig/{config.pk}/delete/",
        "/admin/connectors/providercircuit/",
        "/admin/execution/run/",
        *(f"/admin/execution/run/{run.pk}/change/" for run in (accepted, retried, failed)),
        f"/admin/ccdash/project/{pid}/change/",
        "/admin/ccdash/auditlog/",
        "/admin/",
    ]
    for page in pages:
        seen.response(f"admin {page}", staff.get(page), 200)
    # A credential change saved in the admin leaves a history entry too.
    credential = ProviderCredential.objects.get(config=config)
    staff.post(
        f"/admin/connectors/providerconfig/{config.pk}/change/",
        {
            "enabled": "on",
            "allow_fallback_to_local": "on",
            "rollout_percent": "100",
            "settings": "{}",
            "credential-TOTAL_FORMS": "1",
            "credential-INITIAL_FORMS": "1",
            "credential-MIN_NUM_FORMS": "0",
            "credential-MAX_NUM_FORMS": "1",
            "credential-0-id": str(credential.pk),
            "credential-0-config": str(config.pk),
            "credential-0-secret_apiKey": SECRET + "-v2",
        },
    )
    seen.response(
        "admin history after a credential change",
        staff.get(f"/admin/connectors/providerconfig/{config.pk}/history/"),
        200,
    )

    # Every log record, rendered as a handler would.
    for record in caplog.records:
        seen.add(f"log {record.name}", record.getMessage())
        if record.exc_info:
            seen.add(
                f"log traceback {record.name}",
                logging.Formatter().formatException(record.exc_info),
            )

    assert failed.status_reason == "provider_auth_failed"
    assert len(seen.texts) > 40
    # The provider's echoes did reach us, and were scrubbed on the way in.
    assert any("[REDACTED]" in text for _, text in seen.texts)
    assert seen.leaks() == []
