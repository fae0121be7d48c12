"""Circuit breaker per provider endpoint, stored in the database so every
worker and reconciler process agrees on it.

``CIRCUIT_FAILURE_THRESHOLD`` consecutive transient failures open the circuit
for ``CIRCUIT_RESET_S``; while open, routing falls back and the reconciler
skips the endpoint. After that one probe is let through (half-open): a success
closes it, a failure opens it again.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from connectors.models import ProviderCircuit


def _limits() -> tuple[int, float]:
    conf = settings.EXECUTION
    return int(conf["CIRCUIT_FAILURE_THRESHOLD"]), float(conf["CIRCUIT_RESET_S"])


def is_open(provider_id: str, base_url: str) -> bool:
    return ProviderCircuit.objects.filter(
        provider_id=provider_id, base_url=base_url.rstrip("/"), open_until__gt=timezone.now()
    ).exists()


def record_success(provider_id: str, base_url: str) -> None:
    ProviderCircuit.objects.filter(
        provider_id=provider_id, base_url=base_url.rstrip("/"), consecutive_failures__gt=0
    ).update(consecutive_failures=0, open_until=None, last_error="")


def record_failure(provider_id: str, base_url: str, error: str) -> bool:
    """Count a transient failure; returns True when this opened the circuit."""
    threshold, reset_s = _limits()
    key = {"provider_id": provider_id, "base_url": base_url.rstrip("/")}
    circuit, _ = ProviderCircuit.objects.get_or_create(**key)
    ProviderCircuit.objects.filter(pk=circuit.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_error=error[:1000]
    )
    circuit.refresh_from_db(fields=["consecutive_failures", "open_until"])
    now = timezone.now()
    if circuit.consecutive_failures >= threshold and not (
        circuit.open_until and circuit.open_until > now
    ):
        ProviderCircuit.objects.filter(pk=circuit.pk).update(
            open_until=now + timedelta(seconds=reset_s)
        )
        return True
    return False
