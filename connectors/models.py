"""Per-project provider configuration and encrypted credentials."""

from __future__ import annotations

import json

from django.conf import settings
from django.db import models
from fernet_fields import EncryptedTextField


class HealthStatus(models.TextChoices):
    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    FAILING = "failing"


class ProviderConfig(models.Model):
    """How one project uses one provider. Settings are validated by the adapter."""

    project = models.ForeignKey(
        "ccdash.Project", on_delete=models.CASCADE, related_name="provider_configs"
    )
    provider_id = models.CharField(max_length=64)
    enabled = models.BooleanField(default=False)
    is_default = models.BooleanField(default=False)
    settings = models.JSONField(default=dict, blank=True)
    allow_fallback_to_local = models.BooleanField(
        default=True, help_text="Run locally when this provider is unavailable."
    )
    rollout_percent = models.PositiveSmallIntegerField(
        default=100,
        help_text="Share of runs (0-100, by run id) routed here; the rest fall back to local.",
    )
    health_status = models.CharField(
        max_length=16, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN
    )
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_message = models.TextField(blank=True, default="")
    # Providers that sign webhooks (GitHub): the unguessable id in the URL the
    # provider posts to, and when the last verified delivery arrived.
    webhook_id = models.CharField(max_length=64, unique=True, null=True, blank=True, default=None)
    last_webhook_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project_id", "provider_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "provider_id"], name="unique_provider_config"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider_id} for {self.project}"


class ProviderCredential(models.Model):
    """A provider's secret values for one project, encrypted at rest (Fernet).

    ``payload`` is JSON text of ``{secretField: value}``; read it with ``values``.
    """

    config = models.OneToOneField(
        ProviderConfig, on_delete=models.CASCADE, related_name="credential"
    )
    payload = EncryptedTextField(default="{}")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    def __str__(self) -> str:
        return f"credentials of {self.config}"

    def __repr__(self) -> str:
        return f"<ProviderCredential {self.pk} of config {self.config_id}>"

    @property
    def values(self) -> dict[str, str]:
        return json.loads(self.payload or "{}")

    @values.setter
    def values(self, data: dict[str, str]) -> None:
        self.payload = json.dumps(data, sort_keys=True)


class ProviderCircuit(models.Model):
    """Circuit breaker state of one provider endpoint, shared by all processes.

    Open while ``open_until`` is in the future: routing falls back and the
    reconciler skips the provider instead of piling up timeouts.
    """

    provider_id = models.CharField(max_length=64)
    base_url = models.CharField(max_length=500)
    consecutive_failures = models.PositiveIntegerField(default=0)
    open_until = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider_id", "base_url"], name="unique_circuit")
        ]

    def __str__(self) -> str:
        return f"circuit {self.provider_id} {self.base_url}"


class ProviderBudget(models.Model):
    """A provider token's request budget as last seen by any process.

    ``token_key`` is a hash of the credential (``connectors.budget.token_key``),
    never the credential. Within one window (``reset_at``) ``remaining`` only
    falls; see ``connectors.budget``.
    """

    provider_id = models.CharField(max_length=64)
    token_key = models.CharField(max_length=64)
    limit = models.PositiveIntegerField(default=0)
    remaining = models.IntegerField(default=0)
    reset_at = models.DateTimeField()
    observed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider_id", "token_key"], name="unique_budget")
        ]

    def __str__(self) -> str:
        return f"budget {self.provider_id} {self.token_key[:8]}: {self.remaining}/{self.limit}"


class WebhookDelivery(models.Model):
    """A verified webhook delivery, kept to answer a re-delivery of the same id
    as a no-op and to hand the work to a task (the payload is read from here,
    so a task lost by the broker is redone from the database)."""

    config = models.ForeignKey(
        ProviderConfig, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    delivery_id = models.CharField(max_length=100)
    event = models.CharField(max_length=64)
    payload = models.JSONField(default=dict)
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["config", "delivery_id"], name="unique_delivery")
        ]
        indexes = [models.Index(fields=["received_at"], name="delivery_received")]

    def __str__(self) -> str:
        return f"{self.event} delivery {self.delivery_id}"
