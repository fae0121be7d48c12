"""A project's provider health, used like a circuit breaker: it recovers by itself.

A failing health check, or a credential the provider rejected during dispatch
or polling, marks the project's config ``failing`` (``mark_failing``). Routing
then holds the provider back, but only for ``CIRCUIT_RESET_S`` after the last
check: after that ``admit`` lets exactly one dispatch through as the probe
(a compare-and-swap on ``health_checked_at``, so two workers never probe at
once). A probe that gets through, or any successful poll of one of the
project's runs, marks the config ``healthy`` again (``mark_healthy``); a probe
that is refused marks it failing for another period. Nobody has to press the
admin's health-check button for a recovered provider to be used again.

``health_checked_at`` is when health was last decided, by a check, a probe or
a poll: the API and the admin show it as ``checkedAt``.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from connectors.circuit import Admission, State
from connectors.models import HealthStatus, ProviderConfig


def _hold_s() -> float:
    return float(settings.EXECUTION["CIRCUIT_RESET_S"])


def admit(config: ProviderConfig) -> Admission:
    """May a run go to this config's provider now? ``PROBE``: yes, as the
    probe of a config marked failing."""
    if config.health_status != HealthStatus.FAILING:
        return Admission(State.CLOSED)
    now = timezone.now()
    checked = config.health_checked_at
    hold_s = _hold_s()
    if checked is not None and (now - checked).total_seconds() < hold_s:
        return Admission(State.OPEN, hold_s - (now - checked).total_seconds())
    same_check = Q(health_checked_at=checked) if checked else Q(health_checked_at__isnull=True)
    won = ProviderConfig.objects.filter(
        same_check, pk=config.pk, health_status=HealthStatus.FAILING
    ).update(health_checked_at=now)
    if won:
        config.health_checked_at = now
        return Admission(State.PROBE)
    return Admission(State.OPEN, hold_s)


def mark_failing(project_id: int, provider_id: str, message: str) -> None:
    ProviderConfig.objects.filter(project_id=project_id, provider_id=provider_id).update(
        health_status=HealthStatus.FAILING,
        health_checked_at=timezone.now(),
        health_message=message[:1000],
    )


def mark_healthy(project_id: int, provider_id: str, message: str) -> int:
    """A config marked failing works again; returns 1 when it was failing."""
    return ProviderConfig.objects.filter(
        project_id=project_id, provider_id=provider_id, health_status=HealthStatus.FAILING
    ).update(
        health_status=HealthStatus.HEALTHY,
        health_checked_at=timezone.now(),
        health_message=message[:1000],
    )
