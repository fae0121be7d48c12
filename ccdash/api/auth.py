"""API tokens and login throttling.

Tokens are django-rest-knox tokens: only a SHA-512 digest is stored (a
database dump gives nobody a usable token), each expires after
``API_TOKEN_TTL_HOURS`` and each login issues a new one, so logging out
(``POST /api/auth/logout/``) ends one client's session without touching the
others. The header stays DRF's convention: ``Authorization: Token <token>``.

The login endpoint is throttled per client address (``API_LOGIN_RATE``,
DRF's ``"N/period"`` syntax); the counts live in Django's cache, so several
web processes need a shared cache (``CACHES``) for one limit across them.
"""

from __future__ import annotations

from django.conf import settings
from knox.auth import TokenAuthentication as KnoxTokenAuthentication
from rest_framework import exceptions
from rest_framework.throttling import SimpleRateThrottle


class TokenAuthentication(KnoxTokenAuthentication):
    """knox's authentication, with a malformed token a 401 like any wrong one
    (knox decodes the header as UTF-8 and would otherwise answer 500)."""

    def authenticate_credentials(self, token: bytes):
        try:
            token.decode("utf-8")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        return super().authenticate_credentials(token)


class LoginRateThrottle(SimpleRateThrottle):
    """At most ``settings.API_LOGIN_RATE`` login attempts per client address.

    The rate is read when a request comes in (not at import, as DRF's
    ``ScopedRateThrottle`` does), so it can be changed in settings and tests.
    Behind a proxy, DRF's ``NUM_PROXIES`` decides which address counts.
    """

    scope = "login"

    def get_rate(self) -> str | None:
        return settings.API_LOGIN_RATE

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
