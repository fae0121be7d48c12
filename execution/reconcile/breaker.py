"""A sweep's circuit breaker: the shared circuit (``connectors.circuit``, the
one dispatch uses too) seen from one sweep, plus what the sweep learns itself.

The sweep holds a ``Breaker`` (composition: it owns its endpoints and its
lock; nothing else touches them). Per provider endpoint:

* when the sweep first meets it, ``load`` asks the shared circuit
  (``circuit.admit``): open → every run of it is skipped and rescheduled;
  half-open and this process won the probe → its first call is the probe and
  the others wait for the probe's answer (``DEFER``); closed → calls go out;
* lane workers ask ``admit`` before each call and report with ``record``:
  ``CIRCUIT_FAILURE_THRESHOLD`` outages in a row (or a failed probe) open the
  endpoint for the rest of the sweep, a probe's answer releases the runs it
  held back;
* the sweep's thread writes what it learned back to the shared circuit
  (``record_shared``) so other processes and routing see it.

Rate limits are not outages here either (``circuit.counts_as_outage``).
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field

from connectors import circuit
from connectors.errors import TransientError
from execution.reconcile.types import PollResult, Target


class Verdict(enum.Enum):
    CALL = "call"
    PROBE = "probe"  # call, and the answer decides for the runs held back
    SKIP = "skip"  # open: reschedule without calling
    DEFER = "defer"  # held back until the probe in flight answers


@dataclass(frozen=True)
class Admission:
    verdict: Verdict
    reason: str = ""
    retry_after: float | None = None


@dataclass
class _Endpoint:
    provider_id: str
    base_url: str
    loaded: bool = False
    open_reason: str = ""
    retry_after: float | None = None
    half_open: bool = False
    probe_in_flight: bool = False
    deferred: list[Target] = field(default_factory=list)
    consecutive_failures: int = 0
    shared_failures: int = 0  # sweep thread only: as last known in the database


class Breaker:
    """One sweep's view of the circuits of the endpoints it polls."""

    def __init__(self, threshold: int):
        self.threshold = threshold
        self._lock = threading.Lock()
        self._endpoints: dict[tuple[str, str], _Endpoint] = {}

    def _get(self, key: tuple[str, str]) -> _Endpoint:
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = _Endpoint(*key)
        return endpoint

    def load(self, keys: set[tuple[str, str]]) -> None:
        """Sweep thread: the shared state of endpoints not seen yet this sweep."""
        for key in keys:
            with self._lock:
                endpoint = self._get(key)
                if endpoint.loaded:
                    continue
                endpoint.loaded = True
            shared = circuit.admit(*key)
            with self._lock:
                endpoint.shared_failures = shared.failures
                if shared.state is circuit.State.OPEN:
                    endpoint.open_reason = "circuit open"
                    endpoint.retry_after = shared.retry_after
                elif shared.state is circuit.State.PROBE:
                    endpoint.half_open = True

    def admit(self, target: Target) -> Admission:
        """Lane worker: may ``target`` be polled now?"""
        with self._lock:
            endpoint = self._get(target.endpoint)
            if endpoint.open_reason:
                return Admission(Verdict.SKIP, endpoint.open_reason, endpoint.retry_after)
            if not endpoint.half_open:
                return Admission(Verdict.CALL)
            if endpoint.probe_in_flight:
                endpoint.deferred.append(target)
                return Admission(Verdict.DEFER)
            endpoint.probe_in_flight = True
            return Admission(Verdict.PROBE)

    def record(self, result: PollResult, *, probe: bool) -> list[Target]:
        """Lane worker: the outcome of a call. Returns the runs a probe held
        back, to poll now (or to skip, if the probe failed)."""
        error = result.error
        with self._lock:
            endpoint = self._get(result.target.endpoint)
            if circuit.counts_as_outage(error):
                endpoint.consecutive_failures += 1
                if endpoint.consecutive_failures >= self.threshold or probe:
                    endpoint.open_reason = "circuit open after repeated failures this sweep"
            elif not isinstance(error, TransientError):
                endpoint.consecutive_failures = 0
            if not probe:
                return []
            endpoint.probe_in_flight = False
            endpoint.half_open = False
            deferred, endpoint.deferred = endpoint.deferred, []
            return deferred

    def record_shared(self, result: PollResult) -> None:
        """Sweep thread: keep the shared circuit up to date (only when this
        answer changes it: an outage, or the first success after failures)."""
        if result.skipped or result.target.adapter is None:
            return
        with self._lock:
            endpoint = self._get(result.target.endpoint)  # may come from an earlier sweep
            known = endpoint.shared_failures
        error = result.error
        if circuit.counts_as_outage(error):
            circuit.record_failure(endpoint.provider_id, endpoint.base_url, _message(error))
            known += 1
        elif not isinstance(error, TransientError) and known:
            circuit.record_success(endpoint.provider_id, endpoint.base_url)
            known = 0
        with self._lock:
            endpoint.shared_failures = known

    def take_deferred(self) -> list[Target]:
        """Runs still held back (the sweep is stopping: they are released)."""
        with self._lock:
            out: list[Target] = []
            for endpoint in self._endpoints.values():
                out += endpoint.deferred
                endpoint.deferred = []
            return out


def _message(error: BaseException | None) -> str:
    return str(getattr(error, "message", "") or error)
