"""Circuit breaker per provider endpoint, stored in the database so every
worker, reconciler process and dispatch agrees on it.

``CIRCUIT_FAILURE_THRESHOLD`` consecutive outages open the circuit for
``CIRCUIT_RESET_S``; while open, routing falls back and the reconciler skips
the endpoint. After that the circuit is *half-open*: ``admit`` lets exactly
one caller through as the probe (a compare-and-swap on ``open_until``, so two
processes never probe at once); the probe's success closes the circuit, its
failure opens it again. Nobody has to act for a recovered provider to be used
again.

What counts: ``counts_as_outage``. A rate-limit answer is not an outage (the
provider is up and says when to come back; the HTTP gate already holds
requests until then), and neither is an answer the provider gave on purpose
(auth, not found, bad request): only timeouts, connection errors and 5xx are.
Dispatch and the reconciler both go through ``record``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from connectors.errors import RateLimited, TransientError
from connectors.models import ProviderCircuit


def _limits() -> tuple[int, float]:
    conf = settings.EXECUTION
    return int(conf["CIRCUIT_FAILURE_THRESHOLD"]), float(conf["CIRCUIT_RESET_S"])


def counts_as_outage(error: BaseException | None) -> bool:
    """Whether ``error`` is a sign the endpoint is down (see the module doc)."""
    return isinstance(error, TransientError) and not isinstance(error, RateLimited)


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    PROBE = "probe"  # half-open, and this caller holds the probe


@dataclass(frozen=True)
class Admission:
    """``admit``'s answer: ``state``, and for ``OPEN`` how long until it may
    be tried again (seconds)."""

    state: State
    retry_after: float | None = None
    failures: int = 0  # consecutive outages as stored

    @property
    def allowed(self) -> bool:
        return self.state is not State.OPEN


def admit(provider_id: str, base_url: str) -> Admission:
    """May a call go to this endpoint now? ``PROBE``: yes, and this caller is
    the half-open probe, which must ``record`` its outcome."""
    threshold, reset_s = _limits()
    key = {"provider_id": provider_id, "base_url": base_url.rstrip("/")}
    row = ProviderCircuit.objects.filter(**key).first()
    if row is None or row.consecutive_failures < threshold:
        return Admission(State.CLOSED, failures=row.consecutive_failures if row else 0)
    now = timezone.now()
    if row.open_until and row.open_until > now:
        return Admission(
            State.OPEN, (row.open_until - now).total_seconds(), row.consecutive_failures
        )
    # Half-open: whoever moves open_until first holds the probe. The circuit
    # counts as open for everyone else meanwhile, and stays so for a full
    # period should the probe fail (or its caller die before answering).
    won = (
        ProviderCircuit.objects.filter(pk=row.pk, consecutive_failures__gte=threshold)
        .filter(Q(open_until=row.open_until) if row.open_until else Q(open_until__isnull=True))
        .update(open_until=now + timedelta(seconds=reset_s))
    )
    if won:
        return Admission(State.PROBE, failures=row.consecutive_failures)
    return Admission(State.OPEN, reset_s, row.consecutive_failures)


def is_open(provider_id: str, base_url: str) -> bool:
    """Open right now (half-open counts as closed: a call may probe it)."""
    return ProviderCircuit.objects.filter(
        provider_id=provider_id, base_url=base_url.rstrip("/"), open_until__gt=timezone.now()
    ).exists()


def record(provider_id: str, base_url: str, error: BaseException | None, message: str = "") -> None:
    """The outcome of one call: an outage counts (``record_failure``), any
    answer from a provider that is up closes the circuit, and a rate limit
    changes nothing."""
    if counts_as_outage(error):
        record_failure(provider_id, base_url, message or str(error))
    elif not isinstance(error, TransientError):
        record_success(provider_id, base_url)


def record_success(provider_id: str, base_url: str) -> None:
    ProviderCircuit.objects.filter(
        provider_id=provider_id, base_url=base_url.rstrip("/"), consecutive_failures__gt=0
    ).update(consecutive_failures=0, open_until=None, last_error="")


def record_failure(provider_id: str, base_url: str, error: str) -> bool:
    """Count an outage; returns True when this opened the circuit (a failed
    half-open probe leaves it open: ``admit`` already held it for a period)."""
    threshold, reset_s = _limits()
    key = {"provider_id": provider_id, "base_url": base_url.rstrip("/")}
    circuit, _ = ProviderCircuit.objects.get_or_create(**key)
    ProviderCircuit.objects.filter(pk=circuit.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_error=error[:1000]
    )
    circuit.refresh_from_db(fields=["consecutive_failures", "open_until"])
    now = timezone.now()
    if circuit.consecutive_failures < threshold or (
        circuit.open_until and circuit.open_until > now
    ):
        return False
    ProviderCircuit.objects.filter(pk=circuit.pk).update(
        open_until=now + timedelta(seconds=reset_s)
    )
    return True
