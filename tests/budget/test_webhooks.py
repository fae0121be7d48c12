"""Signed GitHub webhooks: ``POST /api/webhooks/github/<webhook id>``.

Deliveries are signed as GitHub documents
(https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries):
``X-Hub-Signature-256: sha256=HMAC-SHA256(secret, raw body)``. The GitHub
simulator produces them from its runs' status changes."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from connectors import services
from connectors.models import ProviderConfig, WebhookDelivery
from connectors.providers.github_actions.simulator import GitHubActionsSimulator
from connectors.webhooks import webhook_id_for
from execution.models import Run, RunEvent
from execution.reconciler import reconcile_sweep
from tests.factories import RunFactory

SECRET = "whsec-test-0123456789"
TOKEN = GitHubActionsSimulator.default_token
SETTINGS = {"owner": "ccdash", "repo": "demo", "workflow": "agent.yml", "ref": "main"}


@pytest.fixture
def sim():
    with GitHubActionsSimulator() as simulator:
        simulator.configure(webhook_secret=SECRET)
        yield simulator


@pytest.fixture
def config(project, sim) -> ProviderConfig:
    services.update_config(
        project,
        "github_actions",
        actor="test",
        enabled=True,
        settings={**SETTINGS, "baseUrl": sim.url},
    )
    services.write_credentials(
        project, "github_actions", {"token": TOKEN, "webhookSecret": SECRET}, user=None
    )
    return ProviderConfig.objects.get(project=project, provider_id="github_actions")


@pytest.fixture
def url(config) -> str:
    return f"/api/webhooks/github/{webhook_id_for(config)}"


def signed(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post(url: str, payload: dict, *, event="workflow_run", delivery=None, signature=None):
    body = json.dumps(payload).encode()
    headers = {
        "HTTP_X_GITHUB_EVENT": event,
        "HTTP_X_GITHUB_DELIVERY": delivery or str(uuid.uuid4()),
    }
    if signature is not False:
        headers["HTTP_X_HUB_SIGNATURE_256"] = signature or signed(body)
    return Client().post(url, body, content_type="application/json", **headers)


def active_run(project, provider_run_id: str, status="running", raw="in_progress") -> Run:
    return RunFactory(
        project=project,
        provider_id="github_actions",
        provider_run_id=provider_run_id,
        status=status,
        provider_status_raw=raw,
        next_reconcile_at=timezone.now() + timedelta(seconds=5),
    )


def run_payload(run_id, status, conclusion=None):
    return {
        "action": "completed" if status == "completed" else status,
        "workflow_run": {"id": int(run_id), "status": status, "conclusion": conclusion},
    }


def deliver(sim, capture):
    """Send the simulator's pending deliveries through the test client."""

    def send(url, body, headers):
        meta = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()}
        meta.pop("HTTP_CONTENT_TYPE", None)
        with capture(execute=True):
            return Client().post(url, body, content_type="application/json", **meta)

    return send


@pytest.mark.django_db
def test_a_bad_signature_gets_401_and_changes_nothing(project, url, sim):
    run_id = sim.seed(1, "running")[0]
    run = active_run(project, run_id)
    body = run_payload(run_id, "completed", "success")

    wrong = post(url, body, signature=signed(json.dumps(body).encode(), "not-the-secret"))
    missing = post(url, body, signature=False)

    for answer in (wrong, missing):
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "invalid_signature"
    run.refresh_from_db()
    assert run.status == "running"
    assert not WebhookDelivery.objects.exists()
    assert ProviderConfig.objects.get().last_webhook_at is None


@pytest.mark.django_db
def test_an_unknown_webhook_id_is_a_404_json(config):
    answer = post("/api/webhooks/github/nope", {"zen": "hi"})

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


@pytest.mark.django_db
def test_without_a_webhook_secret_nothing_is_accepted(project, url, config):
    services.write_credentials(project, "github_actions", {"webhookSecret": ""}, user=None)

    assert post(url, {"zen": "hi"}, event="ping").status_code == 401


@pytest.mark.django_db
def test_a_signed_workflow_run_delivery_updates_the_run_at_once(
    project, url, sim, django_capture_on_commit_callbacks
):
    run_id = sim.seed(1, "running")[0]
    run = active_run(project, run_id)
    sim.set_state(run_id, "success")

    with django_capture_on_commit_callbacks(execute=True):
        answer = post(url, run_payload(run_id, "completed", "success"))

    assert answer.status_code == 202
    run.refresh_from_db()
    assert (run.status, run.provider_status_raw, run.sync_status) == (
        "succeeded",
        "completed/success",
        "in_sync",
    )
    # The final logs were read before the run was marked ended.
    types = list(RunEvent.objects.filter(run=run).values_list("event_type", flat=True))
    assert "output" in types and types[-1] == "status_changed"
    assert ProviderConfig.objects.get().last_webhook_at is not None


@pytest.mark.django_db
def test_a_delivery_seen_before_is_a_200_no_op(
    project, url, sim, django_capture_on_commit_callbacks
):
    run_id = sim.seed(1, "running")[0]
    active_run(project, run_id, status="queued", raw="queued")
    delivery = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        first = post(url, run_payload(run_id, "in_progress"), delivery=delivery)
        again = post(url, run_payload(run_id, "in_progress"), delivery=delivery)

    assert first.status_code == 202
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert WebhookDelivery.objects.count() == 1
    assert RunEvent.objects.filter(event_type="status_changed").count() == 1


@pytest.mark.django_db
def test_an_older_delivery_arriving_late_never_moves_a_run_back(
    project, url, sim, django_capture_on_commit_callbacks
):
    run_id = sim.seed(1, "running")[0]
    run = active_run(project, run_id, status="queued", raw="queued")
    with django_capture_on_commit_callbacks(execute=True):
        post(url, run_payload(run_id, "in_progress"))
        post(url, run_payload(run_id, "queued"))

    run.refresh_from_db()
    assert run.status == "running" and run.provider_status_raw == "in_progress"


@pytest.mark.django_db
def test_deliveries_relax_the_poll_cadence_but_never_stop_it(
    project, url, sim, settings, django_capture_on_commit_callbacks
):
    run_id = sim.seed(1, "queued")[0]
    run = active_run(project, run_id, status="queued", raw="queued")
    Run.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(hours=1))
    due_before = Run.objects.get(pk=run.pk).next_reconcile_at
    with django_capture_on_commit_callbacks(execute=True):
        post(url, run_payload(run_id, "in_progress"))
    run.refresh_from_db()
    assert run.status == "running"
    assert run.next_reconcile_at == due_before  # still polled, when it was due anyway

    Run.objects.filter(pk=run.pk).update(next_reconcile_at=timezone.now())
    started = timezone.now()
    reconcile_sweep()

    run.refresh_from_db()
    # Relaxed 15x: the next listing in 75 s instead of 5 s; never not at all.
    assert run.next_reconcile_at is not None
    assert 74 < (run.next_reconcile_at - started).total_seconds() <= 76


@pytest.mark.django_db
def test_a_workflow_job_delivery_makes_the_logs_due(
    project, url, sim, django_capture_on_commit_callbacks
):
    run_id = sim.seed(1, "running")[0]
    run = active_run(project, run_id)
    Run.objects.filter(pk=run.pk).update(logs_fetched_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        post(
            url,
            {"action": "completed", "workflow_job": {"run_id": int(run_id)}},
            event="workflow_job",
        )

    run.refresh_from_db()
    assert run.logs_fetched_at < timezone.now() - timedelta(hours=1)
    assert run.next_reconcile_at <= timezone.now()


@pytest.mark.django_db
def test_the_simulator_signs_deliveries_the_receiver_accepts(
    project, url, sim, django_capture_on_commit_callbacks
):
    run_ids = sim.seed(2, "running")
    runs = [active_run(project, run_id) for run_id in run_ids]
    sim.pending_deliveries()  # what has happened so far was delivered
    sim.set_state(run_ids[0], "success")
    sim.set_state(run_ids[1], "failure")
    sim.configure(webhook_url=f"http://testserver{url}", webhook_duplicate_every=2)

    sent = sim.deliver_webhooks(deliver(sim, django_capture_on_commit_callbacks))

    assert sent == 6  # two runs x (workflow_run + workflow_job), every second twice
    statuses = {r.pk: Run.objects.get(pk=r.pk).status for r in runs}
    assert statuses == {runs[0].pk: "succeeded", runs[1].pk: "failed"}
    assert WebhookDelivery.objects.count() == 4


@pytest.mark.django_db
def test_a_lost_delivery_is_still_caught_by_polling(
    project, url, config, sim, django_capture_on_commit_callbacks
):
    run_id = sim.seed(1, "running")[0]
    run = active_run(project, run_id)
    sim.pending_deliveries()
    sim.set_state(run_id, "success")
    sim.configure(webhook_url=f"http://testserver{url}", webhook_drop_every=1)

    sim.deliver_webhooks(deliver(sim, django_capture_on_commit_callbacks))
    run.refresh_from_db()
    assert run.status == "running"  # every delivery was lost

    Run.objects.filter(pk=run.pk).update(next_reconcile_at=timezone.now())
    reconcile_sweep()

    run.refresh_from_db()
    assert run.status == "succeeded"


@pytest.mark.django_db
def test_the_provider_list_gives_the_absolute_webhook_url_and_last_delivery(
    project, admin_client, url, config
):
    ProviderConfig.objects.filter(pk=config.pk).update(last_webhook_at=timezone.now())

    entries = admin_client.get("/api/execution/providers", {"projectId": project.pk}).json()

    github = next(e for e in entries if e["id"] == "github_actions")
    assert github["webhookUrl"] == f"http://testserver{url}"
    assert github["lastWebhookAt"] is not None
    assert SECRET not in json.dumps(entries)
    cursor = next(e for e in entries if e["id"] == "cursor")
    assert cursor["webhookUrl"] is None


@pytest.mark.django_db
def test_the_webhook_secret_is_write_only(project, admin_client, config):
    answer = admin_client.post(
        "/api/execution/providers/github_actions/credentials",
        {"projectId": project.pk, "credentials": {"webhookSecret": "another-secret-value"}},
        format="json",
    )

    assert answer.status_code == 200
    assert "another-secret-value" not in answer.content.decode()
    fields = {f["name"]: f for f in answer.json()["fields"]}
    assert fields["webhookSecret"]["set"] is True
    assert fields["token"]["set"] is True  # the token is kept
