"""The one way out to the network for every adapter.

Everything an adapter sends goes through ``HttpClient.request``: a shared
``requests`` session per provider endpoint (connection reuse matters when a
sweep polls thousands of runs), a mandatory timeout, our User-Agent, a
per-endpoint rate-limit gate that refuses to send before the provider's
``Retry-After``/reset time, and error messages scrubbed of credentials. Tests
replace this module's ``HttpClient.request`` (or point adapters at a simulator).
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Iterable, Mapping
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from connectors.endpoints import guard_request
from connectors.errors import (
    AuthError,
    ConnectorError,
    PermanentError,
    ProviderTimeout,
    RateLimited,
    RunNotFound,
    TransientError,
)
from connectors.redaction import Redactor, register_secrets

USER_AGENT = "ccdash-connectors/1.0 (+https://github.com/ccdash)"
# (connect, read) seconds; adapters may pass shorter ones, never none.
DEFAULT_TIMEOUT: tuple[float, float] = (3.05, 10.0)
POOL_SIZE = 64


class RateLimitGate:
    """Remembers until when an endpoint asked us to stay away (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocked_until = 0.0

    def block_for(self, seconds: float) -> None:
        with self._lock:
            self._blocked_until = max(self._blocked_until, time.monotonic() + max(0.0, seconds))

    def remaining(self) -> float:
        with self._lock:
            return max(0.0, self._blocked_until - time.monotonic())


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))


def rate_limit_delay(response: requests.Response, *, default: float = 60.0) -> float:
    """How long to wait after a rate-limit answer.

    ``Retry-After`` wins; else a reset epoch when nothing remains
    (``x-ratelimit-reset`` as GitHub and Cursor send it); else ``default``.
    """
    headers = response.headers
    retry_after = parse_retry_after(headers.get("Retry-After"))
    if retry_after is not None:
        return retry_after
    reset = headers.get("x-ratelimit-reset")
    if reset and headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return default


def is_rate_limited(response: requests.Response) -> bool:
    """429, or GitHub's 403 with an exhausted quota or a secondary-limit message."""
    if response.status_code == 429:
        return True
    if response.status_code == 403:
        if response.headers.get("x-ratelimit-remaining") == "0":
            return True
        if "Retry-After" in response.headers:
            return True
        return "rate limit" in response.text[:500].lower()
    return False


MAX_REDIRECTS = 3


class HttpClient:
    """A provider endpoint's HTTP client: session, timeouts, gate, redaction.

    Redirects are never followed by ``requests`` itself (it would keep the
    ``Authorization`` header for a redirect to another port of the same host):
    ``request`` follows a ``GET`` redirect only within the endpoint's own
    origin, and answers any other redirect as it came. Downloads from a
    storage host go through ``storage_request``, without credentials.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: tuple[float, float] | float = DEFAULT_TIMEOUT,
        default_hosts: Iterable[str] | None = None,
        label: str = "provider",
    ):
        self.base_url = base_url.rstrip("/")
        # The provider's own API hosts; None: no endpoint check (not a provider API).
        self.default_hosts = tuple(default_hosts) if default_hosts is not None else None
        self.label = label
        self.timeout = timeout
        self.gate = RateLimitGate()
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = USER_AGENT
        # Storage hosts get no credential of any kind: no header, no cookie.
        self.storage_session = requests.Session()
        self.storage_session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self.storage_session.headers["User-Agent"] = USER_AGENT

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def same_origin(self, url: str) -> bool:
        """True when ``url`` has the endpoint's scheme, host and port."""
        return origin(url) == origin(self.base_url)

    def request(
        self,
        method: str,
        path: str,
        *,
        secrets: Iterable[str] = (),
        timeout: tuple[float, float] | float | None = None,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; raise a typed ``ConnectorError`` for transport failures.

        HTTP error statuses are returned, not raised: adapters know what a 404
        or 409 means for them (``raise_for_status`` below covers the rest).
        Raises ``RateLimited`` without sending while the endpoint's gate is shut,
        and ``EndpointNotAllowed`` (a ``ConfigurationError``) without sending when
        the provider's API endpoint is not one credentials may go to.
        A ``GET`` redirected within the endpoint's origin (GitHub's 301 for a
        renamed repository) is followed unless ``follow_redirects`` is false;
        any other redirect is returned.
        """
        redactor = Redactor(secrets)
        register_secrets(secrets)
        wait = self.gate.remaining()
        if wait > 0:
            raise RateLimited(
                f"rate limited by provider; next request allowed in {wait:.1f}s", retry_after=wait
            )
        url = self.url(path)
        if self.default_hosts is not None and url.startswith(self.base_url):
            guard_request(url, self.default_hosts, label=self.label)
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(self.session, method, url, redactor, timeout, headers, kwargs)
            target = redirect_target(response)
            if not (follow_redirects and target and method in ("GET", "HEAD")):
                break
            if not self.same_origin(target):
                break
            response.close()
            url = target
        if is_rate_limited(response):
            delay = rate_limit_delay(response)
            self.gate.block_for(delay)
        return response

    def storage_request(
        self, url: str, *, timeout: tuple[float, float] | float | None = None, **kwargs: Any
    ) -> requests.Response:
        """``GET`` a short-lived signed URL on a storage host: no credentials,
        no cookies, no redirects, streamed (read it with ``read_capped``)."""
        return self._send(
            self.storage_session,
            "GET",
            url,
            Redactor(()),
            timeout,
            None,
            {**kwargs, "stream": True},
        )

    def _send(
        self,
        session: requests.Session,
        method: str,
        url: str,
        redactor: Redactor,
        timeout: tuple[float, float] | float | None,
        headers: Mapping[str, str] | None,
        kwargs: dict[str, Any],
    ) -> requests.Response:
        try:
            return session.request(
                method,
                url,
                timeout=timeout if timeout is not None else self.timeout,
                headers=headers,
                allow_redirects=False,
                **kwargs,
            )
        except requests.Timeout as exc:
            raise ProviderTimeout(redactor.scrub(f"{method} {url} timed out: {exc}")) from None
        except requests.RequestException as exc:
            raise TransientError(redactor.scrub(f"{method} {url} failed: {exc}")) from None


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of ``url``, the port defaulted by scheme."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port


def redirect_target(response: requests.Response) -> str:
    """The absolute URL a 3xx answer points to ("" when it is not a redirect)."""
    location = response.headers.get("Location")
    if response.status_code not in (301, 302, 303, 307, 308) or not location:
        return ""
    return urljoin(response.url or "", location)


def read_capped(response: requests.Response, max_bytes: int) -> tuple[bytes, bool]:
    """Read a streamed body up to ``max_bytes``: ``(content, truncated)``.

    Stops reading (and closes the response) as soon as the cap is passed, so
    an endless or huge body costs at most ``max_bytes`` plus one chunk.
    """
    chunks: list[bytes] = []
    size, truncated = 0, False
    try:
        for chunk in response.iter_content(64 * 1024):
            if size + len(chunk) > max_bytes:
                chunks.append(chunk[: max_bytes - size])
                truncated = True
                break
            chunks.append(chunk)
            size += len(chunk)
    except requests.RequestException as exc:
        raise TransientError(f"download interrupted: {type(exc).__name__}") from None
    finally:
        response.close()
    return b"".join(chunks), truncated


def raise_for_status(
    response: requests.Response, *, secrets: Iterable[str] = (), what: str = "request"
) -> None:
    """Map an HTTP error answer to the contract's error family.

    401 → AuthError; 403 → RateLimited when it is a rate limit, else AuthError;
    404/410 → RunNotFound; 408/429/5xx → TransientError (with retry hint);
    any other 4xx → PermanentError; a redirect that was not followed (to
    another origin) → PermanentError naming the host, never the full URL
    (signed URLs carry credentials in their query).
    """
    status = response.status_code
    if 300 <= status < 400 and status != 304:
        host = origin(redirect_target(response))[1] or "an unknown host"
        raise PermanentError(
            f"{what} failed: HTTP {status} redirect to {host} not followed", status_code=status
        )
    if status < 400:
        return
    detail = Redactor(secrets).scrub(_error_detail(response))
    message = f"{what} failed: HTTP {status}" + (f" {detail}" if detail else "")
    if is_rate_limited(response):
        raise RateLimited(message, status_code=status, retry_after=rate_limit_delay(response))
    if status in (401, 403):
        raise AuthError(message, status_code=status)
    if status in (404, 410):
        raise RunNotFound(message, status_code=status)
    if status == 408 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise TransientError(message, status_code=status, retry_after=retry_after)
    raise PermanentError(message, status_code=status)


def _error_detail(response: requests.Response) -> str:
    """A short, human message from a provider error body, whatever its shape."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200].strip()
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message") or error.get("code") or "")[:200]
        for key in ("message", "detail", "error"):
            if body.get(key):
                return str(body[key])[:200]
    return ""


_clients: dict[tuple[str, str], HttpClient] = {}
_clients_lock = threading.Lock()


def client_for(
    provider_id: str, base_url: str, *, default_hosts: Iterable[str] = (), label: str = ""
) -> HttpClient:
    """The shared client of one provider endpoint (one pool, one rate-limit gate).

    Every request to ``base_url`` is checked by ``connectors.endpoints``:
    ``default_hosts`` are the provider's public API hosts.
    """
    key = (provider_id, base_url.rstrip("/"))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = HttpClient(
                base_url, default_hosts=default_hosts, label=label or provider_id
            )
        return client


def reset_clients() -> None:
    """Forget shared clients (tests: fresh gates between cases)."""
    with _clients_lock:
        for client in _clients.values():
            client.session.close()
        _clients.clear()


__all__ = [
    "DEFAULT_TIMEOUT",
    "ConnectorError",
    "HttpClient",
    "client_for",
    "raise_for_status",
    "rate_limit_delay",
    "read_capped",
    "redirect_target",
    "reset_clients",
]
