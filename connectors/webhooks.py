"""Signed provider webhooks: ``POST /api/webhooks/github/<webhook id>``.

GitHub signs each delivery with the hook's secret: ``X-Hub-Signature-256:
sha256=<HMAC-SHA256 of the raw body>``, names it with ``X-GitHub-Delivery``
(the same id when it re-delivers) and its kind with ``X-GitHub-Event``, and
expects an answer within 10 s
(https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries).

The view authenticates by signature only (no session, no CSRF token, no API
token): the project's webhook secret (the GitHub adapter's ``webhookSecret``
credential, encrypted and write-only like the token) is the only key. Bad or
missing signature: 401 and nothing is stored. A delivery id already seen:
200, nothing done again. Otherwise the delivery is stored, the config's
``last_webhook_at`` stamped, and the work left to a django-q2 task
(``execution.webhooks.process_delivery``), so the answer is fast.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from connectors.models import ProviderConfig, WebhookDelivery

# Provider id → the URL segment its deliveries come to.
WEBHOOK_SOURCES = {"github_actions": "github"}
# Events the task acts on; others (``ping``, anything the hook also sends) are
# acknowledged and dropped.
HANDLED_EVENTS = frozenset({"workflow_run", "workflow_job"})
PROCESS_TASK = "execution.webhooks.process_delivery"
MAX_BODY = 5 * 1024 * 1024  # GitHub caps payloads at 25 MB; ours are a few KB


def signature(secret: str, body: bytes) -> str:
    """``sha256=<hex>``: what GitHub sends in ``X-Hub-Signature-256``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Constant-time check of ``header`` against the body's signature."""
    if not secret or not header:
        return False
    return hmac.compare_digest(signature(secret, body).encode(), header.strip().encode())


def webhook_id_for(config: ProviderConfig) -> str:
    """The config's webhook id, created on first use (unguessable, stable)."""
    if not config.webhook_id:
        candidate = secrets.token_urlsafe(24)
        ProviderConfig.objects.filter(pk=config.pk, webhook_id__isnull=True).update(
            webhook_id=candidate
        )
        config.webhook_id = (
            ProviderConfig.objects.filter(pk=config.pk).values_list("webhook_id", flat=True).get()
        )
    return str(config.webhook_id)


def webhook_url(request: HttpRequest | None, config: ProviderConfig | None) -> str | None:
    """The absolute URL to paste into the provider's webhook settings; None for
    providers without webhooks or without a stored config."""
    source = WEBHOOK_SOURCES.get(config.provider_id) if config is not None else None
    if source is None or config is None or config.pk is None:
        return None
    path = reverse("provider-webhook", args=[source, webhook_id_for(config)])
    return request.build_absolute_uri(path) if request is not None else path


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


@csrf_exempt
@require_POST
def receive(request: HttpRequest, source: str, webhook_id: str) -> JsonResponse:
    """Verify, deduplicate, store and enqueue one delivery (see the module)."""
    provider_ids = [p for p, s in WEBHOOK_SOURCES.items() if s == source]
    config = (
        ProviderConfig.objects.filter(provider_id__in=provider_ids, webhook_id=webhook_id)
        .select_related("credential")
        .first()
        if provider_ids
        else None
    )
    if config is None:
        return _error(404, "not_found", "No webhook with this id.")
    body = request.body[: MAX_BODY + 1]
    credential = getattr(config, "credential", None)
    secret = (credential.values.get("webhookSecret") if credential else "") or ""
    if not verify(secret, body, request.headers.get("X-Hub-Signature-256")):
        return _error(401, "invalid_signature", "Missing or invalid X-Hub-Signature-256.")
    if len(body) > MAX_BODY:
        return _error(413, "payload_too_large", "Delivery body too large.")
    delivery_id = (request.headers.get("X-GitHub-Delivery") or "").strip()[:100]
    event = (request.headers.get("X-GitHub-Event") or "").strip()[:64]
    if not delivery_id:
        return _error(400, "missing_delivery_id", "X-GitHub-Delivery is required.")
    try:
        payload: Any = json.loads(body or b"{}")
    except ValueError:
        return _error(400, "invalid_json", "The delivery body is not JSON.")
    now = timezone.now()
    ProviderConfig.objects.filter(pk=config.pk).update(last_webhook_at=now)
    if event not in HANDLED_EVENTS or not isinstance(payload, dict):
        return JsonResponse({"accepted": False, "reason": f"event {event!r} not used"})
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                config=config,
                delivery_id=delivery_id,
                event=event,
                payload=payload,
                received_at=now,
            )
    except IntegrityError:
        return JsonResponse({"accepted": False, "duplicate": True})
    transaction.on_commit(lambda: _enqueue(delivery.pk))
    return JsonResponse({"accepted": True}, status=202)


def _enqueue(delivery_pk: int) -> None:
    from django_q.tasks import async_task

    async_task(PROCESS_TASK, delivery_pk, task_name=f"webhook-{delivery_pk}", group="webhooks")
