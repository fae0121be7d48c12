"""The one way out to the network for every adapter.

Everything an adapter sends goes through ``HttpClient.request``: a shared
``requests`` session per provider endpoint (connection reuse matters when a
sweep polls thousands of runs), a mandatory timeout, our User-Agent, a
per-endpoint rate-limit gate that refuses to send before the provider's
``Retry-After``/reset time, and error messages scrubbed of credentials. Tests
replace this module's ``HttpClient.request`` (or point adapters at a simulator).

Two request-budget savers live here too, because every request passes by:

* conditional requests (``conditional=True``, GETs): the ETag and body of
  recent answers are kept per URL and credential (``ConditionalCache``,
  bounded by count and age, shared by the whole process); the request sends
  ``If-None-Match``, and a ``304 Not Modified`` (free on GitHub) is handed to
  the adapter as the 200 it stands for, with ``response.not_modified`` set;
* budgets: an answer's ``x-ratelimit-*`` headers go to ``connectors.budget``
  under a hash of the credential; a GET is refused locally (``RateLimited``)
  once only the token's reserve is left before its reset, so polling never
  takes a token to 0 and cancels still get through.

``counting()`` tallies what the current thread sent (the reconciler measures
what a poll cost with it).
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.sessions import merge_setting
from requests.utils import get_environ_proxies

from connectors import budget
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
# Conditional-request cache: at most this many answers, none older than this
# (an ETag only saves a request while the resource stays unchanged), and no
# body larger than this.
ETAG_CACHE_ENTRIES = 20_000
ETAG_MAX_AGE_S = 3600.0
ETAG_MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class _Cached:
    etag: str
    content: bytes
    content_type: str
    stored_at: float


class ConditionalCache:
    """ETag and body of recent GET answers, least recently used out first."""

    def __init__(self, entries: int = ETAG_CACHE_ENTRIES, max_age_s: float = ETAG_MAX_AGE_S):
        self.entries = entries
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, str], _Cached] = OrderedDict()

    def get(self, key: tuple[str, str]) -> _Cached | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if time.monotonic() - item.stored_at > self.max_age_s:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item

    def put(self, key: tuple[str, str], response: requests.Response) -> None:
        etag = response.headers.get("ETag")
        content = response.content
        if not etag or len(content) > ETAG_MAX_BODY:
            self.discard(key)
            return
        item = _Cached(etag, content, response.headers.get("Content-Type", ""), time.monotonic())
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def discard(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._items.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


etags = ConditionalCache()


@dataclass
class RequestTally:
    """Requests one thread sent inside ``counting()``; ``not_modified`` of
    them were answered 304 (free where the provider counts like GitHub)."""

    sent: int = 0
    not_modified: int = 0

    @property
    def counted(self) -> int:
        return self.sent - self.not_modified


_tallies = threading.local()


@contextlib.contextmanager
def counting() -> Iterator[RequestTally]:
    """Tally the requests this thread sends in the block (nests)."""
    tally = RequestTally()
    stack = _tallies.__dict__.setdefault("stack", [])
    stack.append(tally)
    try:
        yield tally
    finally:
        stack.remove(tally)


def current_tallies() -> list[RequestTally]:
    """The tallies counting this thread's requests (hand them to a helper thread)."""
    return list(getattr(_tallies, "stack", ()))


@contextlib.contextmanager
def tallying(tallies: list[RequestTally]) -> Iterator[None]:
    """Count this (helper) thread's requests into ``tallies`` too."""
    stack = _tallies.__dict__.setdefault("stack", [])
    stack.extend(tallies)
    try:
        yield
    finally:
        for tally in tallies:
            stack.remove(tally)


def _count(not_modified: bool) -> None:
    for tally in getattr(_tallies, "stack", ()):
        tally.sent += 1
        tally.not_modified += not_modified


def credential_key(headers: Mapping[str, str] | None, auth: Any) -> str:
    """A hash of the credential a request carries ("" without one)."""
    if isinstance(auth, tuple) and auth:
        return budget.token_key(str(auth[0]))
    for name, value in (headers or {}).items():
        if name.lower() == "authorization" and value:
            return budget.token_key(str(value).split(" ", 1)[-1])
    return ""


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
        provider_id: str = "",
    ):
        self.base_url = base_url.rstrip("/")
        self.provider_id = provider_id
        # The provider's own API hosts; None: no endpoint check (not a provider API).
        self.default_hosts = tuple(default_hosts) if default_hosts is not None else None
        self.label = label
        self.timeout = timeout
        self.gate = RateLimitGate()
        self.session = _pooled_session()
        self.session.headers["User-Agent"] = USER_AGENT
        # Storage hosts get no credential of any kind: no header, no cookie.
        # Pooled like the API: the reconciler downloads logs many at a time.
        self.storage_session = _pooled_session()
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
        conditional: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """Send one request; raise a typed ``ConnectorError`` for transport failures.

        HTTP error statuses are returned, not raised: adapters know what a 404
        or 409 means for them (``raise_for_status`` below covers the rest).
        Raises ``RateLimited`` without sending while the endpoint's gate is shut
        or, for a GET, while only the token's budget reserve is left; and
        ``EndpointNotAllowed`` (a ``ConfigurationError``) without sending when
        the provider's API endpoint is not one credentials may go to.
        A ``GET`` redirected within the endpoint's origin (GitHub's 301 for a
        renamed repository) is followed unless ``follow_redirects`` is false;
        any other redirect is returned. ``conditional``: a GET revalidates the
        cached answer (see the module docstring); a 304 comes back as that
        answer with ``not_modified`` set.
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
        key = credential_key(headers, kwargs.get("auth"))
        if method == "GET" and key:
            self._check_budget(key)
        cache_key, cached = None, None
        if conditional and method == "GET":
            cache_key = (_full_url(url, kwargs.get("params")), key)
            cached = etags.get(cache_key)
            if cached is not None:
                headers = {**(headers or {}), "If-None-Match": cached.etag}
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(self.session, method, url, redactor, timeout, headers, kwargs)
            target = redirect_target(response)
            if not (follow_redirects and target and method in ("GET", "HEAD")):
                break
            if not self.same_origin(target):
                break
            response.close()
            url = target
        if key and self.provider_id:
            budget.book.observe(self.provider_id, key, response.headers)
        not_modified = response.status_code == 304 and cached is not None
        _count(not_modified)
        if is_rate_limited(response):
            delay = rate_limit_delay(response)
            self.gate.block_for(delay)
        if cache_key is not None:
            if not_modified:
                return _replay(response, cached)  # type: ignore[arg-type]
            if response.status_code == 200:
                etags.put(cache_key, response)
            else:
                etags.discard(cache_key)
        response.not_modified = False  # type: ignore[attr-defined]
        return response

    def _check_budget(self, key: str) -> None:
        known = budget.book.get(self.provider_id, key) if self.provider_id else None
        now = time.time()
        if known is not None and known.polls_blocked(now):
            wait = known.reset_in(now)
            raise RateLimited(
                f"request budget kept in reserve ({known.remaining} of {known.limit} left); "
                f"polling resumes when it resets in {wait:.0f}s",
                retry_after=wait,
            )

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


class _Session(requests.Session):
    """A ``requests`` session that reads the proxy and CA-bundle environment
    once per origin, not on every request.

    requests looks up ``*_proxy``/``no_proxy`` (walking the whole environment,
    twice) and ``REQUESTS_CA_BUNDLE`` for each request: about 0.15 ms, an
    eighth of a status poll's CPU, which a sweep of a thousand polls on 16
    threads pays under one GIL. A process's environment does not change
    while it runs (httpx reads it once per client, too), so the answer per
    (scheme, host, port) is kept: what requests would have used, looked up
    the first time."""

    ENVIRONMENT_ORIGINS = 256  # signed storage URLs bring a few hosts more

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str, int | None], tuple[dict[str, str], str | None]] = {}

    def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
        """``requests.Session.merge_environment_settings``, the environment
        looked up once per origin (a request passing its own proxies, or a
        session not trusting the environment, takes requests' own path)."""
        if not self.trust_env or proxies:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        key = origin(url)
        found = self._environment.get(key)
        if found is None:
            bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
            found = (get_environ_proxies(url, no_proxy=None), bundle)
            if len(self._environment) >= self.ENVIRONMENT_ORIGINS:
                self._environment.clear()
            self._environment[key] = found
        env_proxies, bundle = found
        if verify is True or verify is None:
            verify = bundle or verify
        return {
            "proxies": merge_setting(env_proxies, self.proxies),
            "stream": merge_setting(stream, self.stream),
            "verify": merge_setting(verify, self.verify),
            "cert": merge_setting(cert, self.cert),
        }


def _pooled_session() -> requests.Session:
    """A session keeping up to ``POOL_SIZE`` connections per host, so that the
    reconciler's concurrent calls reuse them (requests' default keeps 10 and
    drops the rest after each call)."""
    session = _Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


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


def _full_url(url: str, params: Any) -> str:
    if not params:
        return url
    return requests.Request("GET", url, params=params).prepare().url or url


def _replay(response: requests.Response, cached: _Cached) -> requests.Response:
    """The cached 200 a 304 stands for, with the 304's fresh headers."""
    response.status_code = 200
    response.reason = "OK (not modified)"
    response._content = cached.content
    if cached.content_type:
        response.headers["Content-Type"] = cached.content_type
    response.not_modified = True  # type: ignore[attr-defined]
    return response


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
                base_url,
                default_hosts=default_hosts,
                label=label or provider_id,
                provider_id=provider_id,
            )
        return client


def reset_clients() -> None:
    """Forget shared clients, cached answers and budgets (tests: a fresh start)."""
    with _clients_lock:
        for client in _clients.values():
            client.session.close()
        _clients.clear()
    etags.clear()
    budget.book.clear()


__all__ = [
    "DEFAULT_TIMEOUT",
    "ConnectorError",
    "HttpClient",
    "RequestTally",
    "client_for",
    "counting",
    "raise_for_status",
    "rate_limit_delay",
    "read_capped",
    "redirect_target",
    "reset_clients",
]
