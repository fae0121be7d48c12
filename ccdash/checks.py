"""Start-up checks that keep a production deployment off public secrets.

With ``DEBUG`` off these are **errors**, so ``runserver``, ``migrate``,
``qcluster`` and every other command that runs the system checks refuse to
start, and ``ccdash.wsgi`` / ``ccdash.asgi`` refuse to serve
(``refuse_unsafe_start``). With ``DEBUG`` on (a developer's machine) they are
silent: the development defaults are there to be used.
"""

from __future__ import annotations

import sys
from pathlib import Path

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

# Anything Django's own tooling generates as a placeholder is public too.
_PUBLIC_PREFIXES = ("django-insecure-",)

# Build-time commands that neither serve nor read a secret (an image build runs
# collectstatic without production secrets; developers run makemigrations).
OFFLINE_COMMANDS = frozenset({"makemigrations", "collectstatic", "spectacular"})


def _offline_command() -> bool:
    argv = sys.argv
    return len(argv) > 1 and Path(argv[0]).name == "manage.py" and argv[1] in OFFLINE_COMMANDS


def _secret_key_is_public(value: str) -> bool:
    return (
        not value
        or value == getattr(settings, "INSECURE_SECRET_KEY", None)
        or value.startswith(_PUBLIC_PREFIXES)
    )


@register(Tags.security)
def check_production_secrets(app_configs=None, **kwargs) -> list[CheckMessage]:
    """``ccdash.E001``: ``SECRET_KEY`` unset or the public default;
    ``ccdash.E002``: ``FERNET_KEYS`` unset. Only with ``DEBUG`` off, and not
    for the ``OFFLINE_COMMANDS``."""
    if settings.DEBUG or _offline_command():
        return []
    errors: list[CheckMessage] = []
    if _secret_key_is_public(settings.SECRET_KEY or ""):
        errors.append(
            Error(
                "SECRET_KEY is unset or the public default while DEBUG is off.",
                hint=(
                    "Set SECRET_KEY in the environment to a long random value "
                    '(python -c "import secrets; print(secrets.token_urlsafe(50))"). '
                    "Whoever knows it can forge session cookies and, because django-q2 "
                    "signs its pickled tasks with SECRET_KEY, queue code that a worker "
                    "unpickles and runs. See docs/configuration.md."
                ),
                id="ccdash.E001",
            )
        )
    if not getattr(settings, "FERNET_KEYS", None):
        errors.append(
            Error(
                "FERNET_KEYS is unset while DEBUG is off: stored credentials have no key.",
                hint=(
                    "Set FERNET_KEYS (comma-separated, newest first) to a random value "
                    "distinct from SECRET_KEY. A database written before this setting "
                    "was required used SECRET_KEY as its key: put that old value last in "
                    "FERNET_KEYS and run manage.py rotate_credentials_key. "
                    "See docs/credentials.md."
                ),
                id="ccdash.E002",
            )
        )
    return errors


def refuse_unsafe_start() -> None:
    """Raise ``ImproperlyConfigured`` when a check above fails.

    The WSGI/ASGI entry points call this: a production server (gunicorn,
    uvicorn) imports them without running the system checks.
    """
    errors = check_production_secrets()
    if errors:
        raise ImproperlyConfigured(
            "Refusing to start: "
            + " ".join(f"[{error.id}] {error.msg} {error.hint}" for error in errors)
        )
