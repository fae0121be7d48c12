"""Django settings, configured from the environment.

Embedded default: a SQLite file in ``var/`` (WAL, IMMEDIATE transactions) and the
django-q2 ORM broker. Scale-out: ``DATABASE_URL=postgres://…`` and ``REDIS_URL=redis://…``.
See docs/configuration.md for every variable.
"""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CCDASH_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# A public value: with DEBUG off the service refuses to start with it (ccdash.checks),
# since whoever knows SECRET_KEY can forge sessions and django-q2's signed tasks.
INSECURE_SECRET_KEY = "ccdash-insecure-dev-key-change-me"
SECRET_KEY = os.environ.get("SECRET_KEY", INSECURE_SECRET_KEY)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

# --- HTTPS and cookies (production sets these; docs/configuration.md) -----------

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Behind a TLS-terminating proxy: "HTTP_X_FORWARDED_PROTO,https". Only set it when
# the proxy strips that header from clients, or anyone can claim https.
_proxy_ssl_header = env_list("SECURE_PROXY_SSL_HEADER")
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) if len(_proxy_ssl_header) == 2 else None
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "ccdash",
    "connectors",
    "execution",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files from the app server itself (gunicorn in production).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Outside the others: every /api/ error they or a view produce becomes JSON.
    "ccdash.api.middleware.ApiJsonErrorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "ccdash.urls"
WSGI_APPLICATION = "ccdash.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "builtins": ["execution.web.templatetags.workbench"],
        },
    }
]

# --- Database -----------------------------------------------------------------

SQLITE_OPTIONS = {
    # IMMEDIATE takes the write lock at BEGIN: several writer processes queue on
    # the busy timeout instead of failing with "database is locked" mid-transaction.
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
}


def database_config(url: str | None) -> dict:
    if not url:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{VAR_DIR / 'ccdash.sqlite3'}"
    config = dj_database_url.parse(url, conn_max_age=0 if url.startswith("sqlite") else 60)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = dict(SQLITE_OPTIONS)
    return config


DATABASES = {"default": database_config(os.environ.get("DATABASE_URL"))}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static ---------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# WhiteNoise serves STATIC_ROOT (``manage.py collectstatic``, compressed and
# cached forever under hashed names) and, where collectstatic was not run (the
# demo, tests), the apps' static folders directly.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": os.environ.get(
            "STATICFILES_STORAGE", "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = True
# Without collectstatic there is no STATIC_ROOT, and the finders serve instead.
warnings.filterwarnings("ignore", message="No directory at: ")
WHITENOISE_AUTOREFRESH = DEBUG

# --- Encrypted credentials --------------------------------------------------------

# Newest key first: it encrypts; every key decrypts. Rotation: prepend a key, run
# `manage.py rotate_credentials_key`, then drop the old key.
# No fallback to SECRET_KEY: one leaked value must not open both sessions and every
# stored credential. Unset with DEBUG off, the service refuses to start
# (ccdash.checks); with DEBUG on, a public development key serves.
INSECURE_FERNET_KEY = "ccdash-insecure-dev-fernet-key"
FERNET_KEYS = env_list("FERNET_KEYS") or ([INSECURE_FERNET_KEY] if DEBUG else [])

# --- REST framework -----------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "ccdash.api.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "ccdash.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "NON_FIELD_ERRORS_KEY": "nonField",
}

# API tokens (django-rest-knox): stored as SHA-512 digests, one per login, each
# expiring after API_TOKEN_TTL_HOURS. Header: "Authorization: Token <token>".
REST_KNOX = {
    "TOKEN_TTL": timedelta(hours=float(os.environ.get("API_TOKEN_TTL_HOURS", "10"))),
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
# Login attempts per client address (DRF rate syntax: "N/second|minute|hour|day").
API_LOGIN_RATE = os.environ.get("API_LOGIN_RATE", "10/minute")

SPECTACULAR_SETTINGS = {
    "TITLE": "CCDash Connectors API",
    "DESCRIPTION": "Launch and watch runs on local and external agentic platforms.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Two different "kind"s: a run's (command|prompt, also a provider's
    # inputKind) and a provider's (local|external).
    "ENUM_NAME_OVERRIDES": {
        "RunKindEnum": "execution.models.RunKind",
        "ProviderKindEnum": ["local", "external"],
    },
}

# --- django-q2 ------------------------------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
# Where the reconcilers share providers' request budgets when Redis is configured
# (one key per token hash under this prefix).
BUDGET_REDIS_PREFIX = os.environ.get("BUDGET_REDIS_PREFIX", "ccdash:budget:")
Q_CLUSTER: dict = {
    "name": "ccdash",
    "workers": int(os.environ.get("Q_WORKERS", "4")),
    # A local run may last up to EXECUTION_MAX_TIMEOUT_S; retry must exceed timeout
    # or a long task is delivered a second time while it still runs.
    "timeout": 3600 + 60,
    "retry": 3600 + 120,
    "max_attempts": 3,
    "ack_failures": True,
    "catch_up": False,
    "save_limit": 1000,
    "poll": 0.2,
    "label": "Task queue",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    # Without "orm" django-q2 silently tries Redis on localhost.
    Q_CLUSTER["orm"] = "default"

# Every project's workspace must be a directory inside this one (symlinks
# resolved): whoever sets a workspace chooses what local runs may touch.
# A relative value is relative to the checkout.
EXECUTION_WORKSPACES_ROOT = (
    BASE_DIR / os.environ.get("EXECUTION_WORKSPACES_ROOT", str(VAR_DIR / "workspaces"))
).resolve()

# --- Connectors -----------------------------------------------------------------------

# Provider API hosts besides each adapter's public ones (GitHub Enterprise Server,
# the simulators): "host" (any port) or "host:port". Credentials are only ever sent
# to an adapter's own hosts or to these; plain http only to allowlisted loopback.
CONNECTORS_ALLOWED_HOSTS = env_list("CONNECTORS_ALLOWED_HOSTS")
# Extra hosts (fnmatch patterns, "host" or "host:port") log downloads may be
# redirected to, besides each adapter's documented storage hosts; no
# credentials are ever sent there (docs/providers.md).
CONNECTORS_STORAGE_HOSTS = env_list("CONNECTORS_STORAGE_HOSTS")

# --- Execution ----------------------------------------------------------------------------

# Local runs execute under bubblewrap ("bwrap", the default) or, only when chosen
# explicitly, unsandboxed ("none"). EXECUTION_BWRAP: the bwrap executable, a name
# looked up on PATH or a path. See docs/configuration.md, "Sandbox".
EXECUTION_SANDBOX = os.environ.get("EXECUTION_SANDBOX", "bwrap")
EXECUTION_BWRAP = os.environ.get("EXECUTION_BWRAP", "bwrap")

EXECUTION = {
    # Local runs
    "DEFAULT_TIMEOUT_S": float(os.environ.get("EXECUTION_DEFAULT_TIMEOUT_S", "900")),
    "MAX_TIMEOUT_S": 3600.0,
    "MAX_OUTPUT_BYTES": int(os.environ.get("EXECUTION_MAX_OUTPUT_BYTES", str(2 * 1024 * 1024))),
    "CANCEL_GRACE_S": 2.0,
    "HEARTBEAT_INTERVAL_S": 2.0,
    # A local run whose worker has not beaten for this long is failed (worker_lost).
    "HEARTBEAT_GRACE_S": float(os.environ.get("EXECUTION_HEARTBEAT_GRACE_S", "30")),
    # Reconciliation
    "RECONCILE_INTERVAL_S": float(os.environ.get("RECONCILE_INTERVAL_S", "5")),
    "RECONCILE_MAX_BACKOFF_S": 300.0,
    "RECONCILE_ERROR_INTERVAL_S": 60.0,
    "STALE_AFTER_S": float(os.environ.get("RECONCILE_STALE_AFTER_S", "60")),
    "RECONCILE_BATCH_SIZE": 500,
    "RECONCILE_LEASE_S": 60.0,
    "RECONCILE_CONCURRENCY": int(os.environ.get("RECONCILE_CONCURRENCY", "32")),
    "PROVIDER_CONCURRENCY": int(os.environ.get("RECONCILE_PROVIDER_CONCURRENCY", "16")),
    # Output is fetched on each status change, at the end, and at most this often.
    "RECONCILE_LOG_INTERVAL_S": float(os.environ.get("RECONCILE_LOG_INTERVAL_S", "10")),
    # A provider call in flight this long stops counting against the global
    # concurrency (only against its provider's cap): a hang starves nobody else.
    "RECONCILE_STUCK_AFTER_S": 0.25,
    "CIRCUIT_FAILURE_THRESHOLD": 5,
    "CIRCUIT_RESET_S": 30.0,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "connectors.redaction.RedactingFilter"},
        "quiet_polling": {"()": "execution.web.quiet_log.QuietPollingFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
        "django.server": {"class": "logging.StreamHandler", "formatter": "django.server"},
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        # django-q2 logs every task at INFO under "django-q".
        "django-q": {"level": "WARNING"},
        # The dev server's access log, without the workbench's own live requests.
        "django.server": {
            "handlers": ["django.server"],
            "level": "INFO",
            "propagate": False,
            "filters": ["quiet_polling"],
        },
    },
}
