"""Safe production defaults: with DEBUG off the service refuses public secrets,
and ``check --deploy`` is clean under the environment docs/configuration.md
documents. Each case runs ``manage.py`` in a subprocess with ``ccdash.settings``
(not the test settings) and only the environment given."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.sandboxing import require_bwrap

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"


def documented_production_env() -> dict[str, str]:
    """The ``sh`` block under "Production environment", placeholders filled."""
    section = DOC.read_text().split("## Production environment", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    env = {}
    for line in block.splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            env[name] = re.sub(r"<[^>]*>", lambda _: secrets.token_urlsafe(50), value)
    return env


def manage(args: list[str], env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    base = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DJANGO_SETTINGS_MODULE": "ccdash.settings",
        "CCDASH_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'scratch.sqlite3'}",
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_under_the_documented_production_env(tmp_path):
    # Production sandboxes local runs: without bubblewrap the check warns (execution.W002).
    require_bwrap()
    env = documented_production_env()
    assert env["DEBUG"] == "false"
    # The scratch SQLite file stands in for the documented PostgreSQL server
    # (the checks do not connect); everything else is the documented block.
    env.pop("DATABASE_URL")

    result = manage(["check", "--deploy", "--fail-level", "WARNING"], env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_debug_off_with_the_default_secret_key_refuses_to_start(tmp_path):
    env = {"DEBUG": "false", "FERNET_KEYS": secrets.token_urlsafe(32)}

    result = manage(["check"], env, tmp_path)

    assert result.returncode != 0
    assert "ccdash.E001" in result.stderr
    assert "SECRET_KEY is unset or the public default" in result.stderr
    assert "django-q2" in result.stderr  # says why it matters


ENTRY_POINTS = [["migrate", "--check"], ["qcluster"], ["runserver", "--noreload", "127.0.0.1:0"]]


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_debug_off_with_public_secrets_refuses_every_entry_point(tmp_path, command):
    result = manage(command, {"DEBUG": "false"}, tmp_path)

    assert result.returncode != 0
    assert "ccdash.E001" in result.stderr
    assert "ccdash.E002" in result.stderr


def test_debug_off_without_fernet_keys_refuses_to_start(tmp_path):
    # No fallback to SECRET_KEY: one leaked value must not open every credential.
    env = {"DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50)}

    result = manage(["check"], env, tmp_path)

    assert result.returncode != 0
    assert "ccdash.E002" in result.stderr
    assert "ccdash.E001" not in result.stderr


def test_the_wsgi_application_refuses_public_secrets(tmp_path):
    # gunicorn imports ccdash.wsgi without running the system checks.
    code = "import ccdash.wsgi"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DEBUG": "false",
            "CCDASH_VAR_DIR": str(tmp_path / "var"),
            "DJANGO_SETTINGS_MODULE": "ccdash.settings",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode != 0
    assert "ImproperlyConfigured: Refusing to start" in result.stderr
    assert "ccdash.E001" in result.stderr


def test_debug_on_keeps_the_development_defaults(tmp_path):
    result = manage(["check"], {"DEBUG": "true"}, tmp_path)

    assert result.returncode == 0, result.stderr


def test_secure_settings_come_from_the_environment(tmp_path):
    env = documented_production_env()
    env.pop("DATABASE_URL")
    code = (
        "from django.conf import settings as s; "
        "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SECURE_HSTS_INCLUDE_SUBDOMAINS, "
        "s.SECURE_HSTS_PRELOAD, s.SECURE_PROXY_SSL_HEADER, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.CSRF_TRUSTED_ORIGINS, s.ALLOWED_HOSTS)"
    )

    result = manage(["shell", "-c", code], env, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "True 31536000 True True ('HTTP_X_FORWARDED_PROTO', 'https') True True "
        "['https://ccdash.example.com'] ['ccdash.example.com']"
    )


def test_offline_build_commands_need_no_secrets(tmp_path):
    # An image build (collectstatic) or a developer (makemigrations) never serves.
    result = manage(["makemigrations", "--check", "--dry-run"], {"DEBUG": "false"}, tmp_path)

    assert result.returncode == 0, result.stderr
