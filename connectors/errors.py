"""Typed errors of the adapter contract.

Runtime failures talking to a provider form the ``ConnectorError`` family and say
whether retrying can help (``permanent``). Configuration problems derive from
Django's ``ImproperlyConfigured`` instead, so no ``except ConnectorError`` can
swallow them. Messages never carry credential values: the HTTP seam redacts
them before an error is built.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class ConnectorError(Exception):
    """A provider call failed at run time."""

    kind = "connector"
    permanent = False

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class TransientError(ConnectorError):
    """Worth retrying later: timeouts, connection failures, 5xx, rate limits.

    ``retry_after`` (seconds) is the provider's hint when it gave one.
    """

    kind = "transient"

    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class ProviderTimeout(TransientError):
    kind = "timeout"


class RateLimited(TransientError):
    kind = "rate_limited"


class InvalidResponse(TransientError):
    """The provider answered something that is not the JSON its API documents
    (an HTML error page from a proxy, a truncated body). The same error for
    every provider; transient because it is usually a gateway's, and because a
    create whose answer was garbled may have happened: the dispatch retry
    recovers the run instead of failing it."""

    kind = "invalid_response"


class PermanentError(ConnectorError):
    """Retrying the same call will not help; surface it."""

    kind = "permanent"
    permanent = True


class DispatchUnconfirmed(PermanentError):
    """The provider accepted a create (2xx) but the run it started cannot be
    identified. Never retried: without an idempotency key a second create
    would start a second run."""

    kind = "dispatch_unconfirmed"


class AuthError(PermanentError):
    """The credential was rejected (missing, revoked, lacking scope)."""

    kind = "auth"


class RunNotFound(PermanentError):
    """The provider does not know the run (deleted, wrong id, vanished)."""

    kind = "not_found"


class UnsupportedOperation(PermanentError):
    """The provider cannot do this (see its capabilities)."""

    kind = "unsupported"


class ProviderConflict(PermanentError):
    """The provider refuses the action in the run's current state (Cursor's
    ``409 agent_busy``, a Devin session that no longer takes messages).
    ``code`` is the provider's reason, passed on to the caller."""

    kind = "conflict"

    def __init__(self, message: str, *, code: str = "provider_conflict", status_code=None):
        super().__init__(message, status_code=status_code)
        self.code = code


class ConfigurationError(ImproperlyConfigured):
    """Provider settings or credentials are invalid.

    ``field_errors`` maps a camelCase settings/credential key (or ``"nonField"``)
    to messages; the API answers them as a 400.
    """

    kind = "configuration"

    def __init__(self, message: str, field_errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.message = message
        self.field_errors = field_errors or {}


class InvalidCredentials(ConfigurationError):
    """Credential values the adapter rejects (``field_errors`` keyed by secret field)."""


class UnknownProvider(ConfigurationError):
    """No adapter is registered under that provider id."""
