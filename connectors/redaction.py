"""Keeping credential values out of everything we store or print.

``Redactor`` scrubs a known set of secret values (a project's credentials) from
provider text before it becomes a run event. ``RedactingFilter`` is installed on
the log handlers: it scrubs every secret value this process has loaded plus
obvious auth header shapes.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "[REDACTED]"
# Shorter values would match ordinary text; nobody issues 3-character tokens.
MIN_SECRET_LENGTH = 4
_AUTH_PATTERN = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}")

_known_secrets: set[str] = set()
_known_lock = threading.Lock()


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values this process has seen, for the logging filter."""
    with _known_lock:
        _known_secrets.update(
            v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_LENGTH
        )


def known_secrets() -> frozenset[str]:
    with _known_lock:
        return frozenset(_known_secrets)


class Redactor:
    """Replaces each of ``secrets`` (longest first) with ``[REDACTED]``."""

    def __init__(self, secrets: Iterable[str] = ()):
        values = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH}
        self._pattern = (
            re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))
            if values
            else None
        )

    def __bool__(self) -> bool:
        return self._pattern is not None

    def scrub(self, text: str) -> str:
        if not text or self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def scrub_obj(self, value):
        """Scrub strings nested in JSON-like data (event payloads)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self.scrub_obj(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_obj(v) for v in value]
        return value


def scrub_known(text: str) -> str:
    """Scrub every secret this process knows and auth-header shapes."""
    text = Redactor(known_secrets()).scrub(text)
    return _AUTH_PATTERN.sub(lambda m: f"{m.group(1)} {MASK}", text)


class RedactingFilter(logging.Filter):
    """Log filter: renders the message once, scrubbed, so args cannot leak."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not kill logging
            return True
        scrubbed = scrub_known(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = scrub_known(logging.Formatter().formatException(record.exc_info))
        if scrubbed != message or record.args:
            record.msg, record.args = scrubbed, None
        return True
