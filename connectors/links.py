"""Links that came from a provider and will be shown to users.

A provider's answer decides ``providerUrl``; the workbench renders it as a
link. Only absolute ``http``/``https`` URLs with a host are kept: anything
else (``javascript:``, ``data:``, relative or malformed) becomes ``""``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

WEB_SCHEMES = frozenset({"http", "https"})


def web_url(value: object) -> str:
    """``value`` if it is an absolute http(s) URL with a host, else ``""``."""
    if not isinstance(value, str):
        return ""
    candidate = value.strip()
    # Control characters and whitespace inside a URL are how scheme filters are
    # bypassed ("java\tscript:"); a real provider link has none.
    if not candidate or any(ord(ch) < 0x21 or ch == "\x7f" for ch in candidate):
        return ""
    try:
        parts = urlsplit(candidate)
    except ValueError:
        return ""
    if parts.scheme.lower() not in WEB_SCHEMES or not parts.hostname:
        return ""
    return candidate
