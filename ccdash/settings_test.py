"""Settings for the test suite.

SQLite by default (a file, so the qcluster and reconciler processes that
integration tests start share it); ``DATABASE_URL`` / ``REDIS_URL`` select
PostgreSQL and the Redis broker for the scale-out run of CI.
"""

from __future__ import annotations

import os
import shutil

from ccdash.settings import *  # noqa: F403
from ccdash.settings import DATABASES, EXECUTION, Q_CLUSTER, VAR_DIR

SECRET_KEY = "test-secret-key-not-for-production"
FERNET_KEYS = ["test-fernet-key-1"]
# The simulators listen on loopback (port 0): allow it, as the demo does.
CONNECTORS_ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if not os.environ.get("DATABASE_URL"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "test-default.sqlite3"),
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # One file per pytest process: concurrent runs never share a database.
            "TEST": {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")},
        }
    }
else:
    # One PostgreSQL test database per pytest process too, so two runs on one
    # server (two engineers, or CI beside a developer) never drop each other's.
    DATABASES["default"]["TEST"] = {"NAME": f"test_ccdash_{os.getpid()}"}

# Processes an integration test starts (qcluster, reconcilers) must use the
# database pytest-django created, not the configured one.
if os.environ.get("CCDASH_TEST_DB_NAME"):
    DATABASES["default"]["NAME"] = os.environ["CCDASH_TEST_DB_NAME"]

# Budgets shared through Redis: a namespace per pytest process (its integration
# tests' child processes inherit it), cleared before each test (tests/conftest.py),
# so neither earlier tests nor another run on the same server leak into a test.
BUDGET_REDIS_PREFIX = os.environ.setdefault(
    "BUDGET_REDIS_PREFIX", f"ccdash-test-{os.getpid()}:budget:"
)

# Tasks run inline in tests; a real qcluster started by an integration test
# sets CCDASH_Q_SYNC=0 to consume the queue instead. The cluster name keys the
# Redis queue, so concurrent or leftover test runs never share one.
Q_CLUSTER = {
    **Q_CLUSTER,
    "name": os.environ.get("CCDASH_Q_NAME", "ccdash-test"),
    "sync": os.environ.get("CCDASH_Q_SYNC", "1") == "1",
    "workers": 2,
}
EXECUTION = {**EXECUTION, "CANCEL_GRACE_S": 1.0, "HEARTBEAT_INTERVAL_S": 0.5}

# Local runs are sandboxed wherever bubblewrap is installed, and always in CI
# (.ci/run installs it). A developer machine without it runs the suite
# unsandboxed; the sandbox tests themselves then skip (and fail in CI).
if (
    not os.environ.get("EXECUTION_SANDBOX")
    and shutil.which(os.environ.get("EXECUTION_BWRAP", "bwrap")) is None
    and os.environ.get("CI") != "true"
):
    EXECUTION_SANDBOX = "none"
