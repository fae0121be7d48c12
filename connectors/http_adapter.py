"""``HttpAdapter``: the one HTTP pipeline every external adapter uses.

An adapter says how it authenticates (``auth_headers``) and which headers its
API wants (``api_headers``); the pipeline owns the rest, the same way for
every provider:

- credentials: a missing one raises ``ConfigurationError`` before anything
  is sent (never an unauthenticated request);
- timeouts (``timeout``, per class), the shared client of the endpoint
  (``connectors.http``: pooled session, rate-limit gate, redaction);
- status → error: one table, ``connectors.http.raise_for_status``;
- JSON: ``decode`` turns a body that is not a JSON object into
  ``InvalidResponse`` for every provider;
- redirects: API calls follow a ``GET`` redirect only within the endpoint's
  origin; ``download`` follows a redirect to a storage host only when the
  host is in ``storage_hosts`` (plus the ``CONNECTORS_STORAGE_HOSTS``
  setting), never with credentials, and reads at most ``max_bytes``.

Adapters call ``send`` (status left to them), ``call`` (raises for error
statuses) or ``call_json`` (and decodes). Tests hook ``HttpClient.request``
(every exchange) or ``HttpAdapter.decode`` (every decoded answer).
"""

from __future__ import annotations

import fnmatch
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
from django.conf import settings

from connectors.base import ProviderAdapter
from connectors.errors import ConfigurationError, InvalidResponse, PermanentError
from connectors.http import (
    DEFAULT_TIMEOUT,
    MAX_REDIRECTS,
    origin,
    raise_for_status,
    read_capped,
    redirect_target,
)


@dataclass(frozen=True)
class Download:
    """A downloaded body: ``status`` of the final answer, ``content`` up to the
    cap, ``truncated`` when the body was longer."""

    status: int
    content: bytes = b""
    truncated: bool = False
    # The final answer when it is an error (its body read, capped), for ``check``.
    error: requests.Response | None = None


ERROR_BODY_BYTES = 4096


class HttpAdapter(ProviderAdapter):
    """Base of the adapters that talk to a provider over HTTP."""

    timeout: ClassVar[tuple[float, float]] = DEFAULT_TIMEOUT
    # Hosts (fnmatch patterns, e.g. "*.actions.githubusercontent.com") that
    # signed download URLs of this provider's API point to.
    storage_hosts: ClassVar[tuple[str, ...]] = ()

    # --- what a subclass says ------------------------------------------------------

    @abstractmethod
    def auth_headers(self) -> dict[str, str]:
        """Headers that authenticate a request. Raise ``ConfigurationError``
        (use ``require_secret``) when a credential is missing."""

    def api_headers(self) -> dict[str, str]:
        """Headers every API request carries besides authentication."""
        return {"Accept": "application/json"}

    # --- the pipeline ----------------------------------------------------------------

    def require_secret(self, name: str) -> str:
        value = self.secrets.get(name)
        if not value:
            label = next((f.label for f in self.secret_fields if f.name == name), name)
            raise ConfigurationError(f"{self.label}: {label} is not set.", {name: ["Not set."]})
        return value

    def send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: tuple[float, float] | float | None = None,
        **kwargs: Any,
    ) -> requests.Response:
        """One authenticated request; the status is left to the caller."""
        merged = {**self.api_headers(), **self.auth_headers(), **(headers or {})}
        return self.http.request(
            method,
            path,
            secrets=self.secrets.secret_values(),
            timeout=timeout or self.timeout,
            headers=merged,
            **kwargs,
        )

    def check(self, response: requests.Response, what: str) -> None:
        """Raise the contract's error for an error status (one table for all)."""
        raise_for_status(
            response, secrets=self.secrets.secret_values(), what=f"{self.label} {what}"
        )

    def call(self, method: str, path: str, what: str, **kwargs: Any) -> requests.Response:
        response = self.send(method, path, **kwargs)
        self.check(response, what)
        return response

    def call_json(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
        return self.decode(self.call(method, path, what, **kwargs), what)

    def decode(self, response: requests.Response, what: str) -> dict[str, Any]:
        """The JSON object of ``response``; ``InvalidResponse`` otherwise."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise InvalidResponse(
                f"{self.label} {what}: HTTP {response.status_code} without a JSON object",
                status_code=response.status_code,
            )
        return body

    # --- downloads -------------------------------------------------------------------

    def allowed_storage_hosts(self) -> tuple[str, ...]:
        configured = getattr(settings, "CONNECTORS_STORAGE_HOSTS", ()) or ()
        return (*self.storage_hosts, *configured)

    def storage_allowed(self, url: str) -> bool:
        """May a redirect to ``url`` be followed? The endpoint's own origin, or
        an allowed host over https (or over the endpoint's own scheme, which is
        http only for a local simulator)."""
        if self.http.same_origin(url):
            return True
        scheme, host, port = origin(url)
        if scheme not in ("https", origin(self.base_url)[0]) or not host:
            return False
        return any(
            fnmatch.fnmatchcase(host, pattern.lower())
            or fnmatch.fnmatchcase(f"{host}:{port}", pattern.lower())
            for pattern in self.allowed_storage_hosts()
        )

    def download(self, path: str, what: str, *, max_bytes: int) -> Download:
        """``GET path`` on the API; a redirect is followed only to an allowed
        storage host, without credentials. The body is streamed and capped.

        Raises ``PermanentError`` for a redirect to any other host (nothing of
        it is read) and the usual errors for transport failures; error
        statuses are returned as ``Download(status, error=response)`` for the
        caller to judge (``check(download.error, what)``).
        """
        response = self.send("GET", path, stream=True, follow_redirects=False)
        for _ in range(MAX_REDIRECTS):
            target = redirect_target(response)
            if not target:
                break
            response.close()
            if not self.storage_allowed(target):
                host = origin(target)[1] or "an unknown host"
                raise PermanentError(
                    f"{self.label} {what}: redirect to {host} refused (not a storage host "
                    "of this provider; allow it in CONNECTORS_STORAGE_HOSTS)"
                )
            response = self.http.storage_request(target, timeout=self.timeout)
        if redirect_target(response):
            response.close()
            raise PermanentError(f"{self.label} {what}: too many redirects")
        if response.status_code >= 300:
            body, _ = read_capped(response, ERROR_BODY_BYTES)
            response._content = body  # so ``check`` can quote the provider's message
            return Download(response.status_code, error=response)
        content, truncated = read_capped(response, max_bytes)
        return Download(response.status_code, content, truncated)
