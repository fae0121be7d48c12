"""Where a provider's credentials may be sent.

A credential belongs to the endpoint it was entered for. A project admin who
can only see ``••••abcd`` must not be able to point ``baseUrl`` at a listener
of their own and press "check" to receive the full token. So:

- an adapter declares the hosts of its public API (``default_hosts``); any
  other host (GitHub Enterprise Server, the simulators) must be listed by the
  platform operator in ``CONNECTORS_ALLOWED_HOSTS`` (``host`` for any port,
  ``host:port`` for one);
- ``https`` is required, except for an allowlisted loopback host;
- a host that is not allowlisted must not resolve to a loopback, private,
  link-local or otherwise non-public address (checked when the request is
  sent, so a DNS answer that changes later is caught too);
- changing a provider's endpoint (scheme, host or port) clears its stored
  credentials unless new ones come with the same change
  (``connectors.services``).
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from connectors.errors import ConfigurationError

DEFAULT_PORTS = {"http": 80, "https": 443}


class EndpointNotAllowed(ConfigurationError):
    """``baseUrl`` points somewhere credentials may not be sent (API code
    ``host_not_allowed``)."""

    code = "host_not_allowed"

    def __init__(self, message: str):
        super().__init__(message, {"baseUrl": [message]})


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        default = DEFAULT_PORTS.get(self.scheme)
        return f"{self.scheme}://{self.host}" + ("" if self.port == default else f":{self.port}")


def origin_of(url: str) -> Origin:
    """Scheme, lower-cased host and effective port of ``url``."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return Origin(scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme, 0))


def allowlist() -> tuple[str, ...]:
    """The operator's ``CONNECTORS_ALLOWED_HOSTS`` entries, lower-cased."""
    entries: Iterable[str] = getattr(settings, "CONNECTORS_ALLOWED_HOSTS", ()) or ()
    return tuple(e.strip().lower() for e in entries if e and e.strip())


def is_allowlisted(origin: Origin) -> bool:
    entries = allowlist()
    return origin.host in entries or f"{origin.host}:{origin.port}" in entries


def _is_loopback_name(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _non_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_base_url(url: str, default_hosts: Iterable[str], *, label: str = "This provider") -> None:
    """Raise ``EndpointNotAllowed`` unless credentials may be sent to ``url``.

    Static checks only (no DNS): scheme, host allowlist, and IP literals. The
    resolved addresses are checked per request by ``guard_request``.
    """
    origin = origin_of(url)
    if not origin.host:
        raise EndpointNotAllowed("baseUrl has no host.")
    listed = is_allowlisted(origin)
    if origin.host not in {h.lower() for h in default_hosts} and not listed:
        raise EndpointNotAllowed(
            f"Host {origin.host}:{origin.port} is not allowed for {label}: only its public "
            "API host, or hosts the platform operator lists in CONNECTORS_ALLOWED_HOSTS."
        )
    if origin.scheme != "https" and not (listed and _is_loopback_name(origin.host)):
        raise EndpointNotAllowed(
            "baseUrl must use https (plain http only for an allowlisted loopback host)."
        )
    if not listed:
        try:
            literal = ipaddress.ip_address(origin.host)
        except ValueError:
            return
        if _non_public(str(literal)):
            raise EndpointNotAllowed(
                f"{origin.host} is not a public address; list it in CONNECTORS_ALLOWED_HOSTS "
                "to use it."
            )


def guard_request(url: str, default_hosts: Iterable[str], *, label: str = "provider") -> None:
    """Before a credentialed request: the static checks, then DNS — a host that
    is not allowlisted must resolve only to public addresses.

    A name that does not resolve is let through: the request itself fails with
    the resolver's error, which is the clearer message.
    """
    check_base_url(url, default_hosts, label=label)
    origin = origin_of(url)
    if is_allowlisted(origin):
        return
    address = _first_non_public_address(origin.host, origin.port)
    if address:
        raise EndpointNotAllowed(
            f"{origin.host} resolves to a non-public address ({address}); "
            "list it in CONNECTORS_ALLOWED_HOSTS to use it."
        )


# host, port -> (checked at, first non-public address or ""). A short memory:
# a reconcile sweep sends hundreds of requests to one host within seconds.
_RESOLVED_TTL_S = 30.0
_resolved: dict[tuple[str, int], tuple[float, str]] = {}
_resolved_lock = threading.Lock()


def _first_non_public_address(host: str, port: int) -> str:
    now = time.monotonic()
    with _resolved_lock:
        cached = _resolved.get((host, port))
    if cached and now - cached[0] < _RESOLVED_TTL_S:
        return cached[1]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        infos = []
    found = next((str(i[4][0]) for i in infos if _non_public(str(i[4][0]))), "")
    with _resolved_lock:
        if len(_resolved) > 1024:
            _resolved.clear()
        _resolved[(host, port)] = (now, found)
    return found
