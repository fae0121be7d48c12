"""Starting real service processes (qcluster, reconcilers) against the test
database, and stopping them with a deadline (django-q2's qcluster can hang on
SIGTERM, upstream #346)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def service_env(**extra: str) -> dict[str, str]:
    """Environment for a child process that shares this test's database and queue."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ccdash.settings_test",
        "CCDASH_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "CCDASH_Q_SYNC": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.setdefault("CCDASH_Q_NAME", f"ccdash-test-{uuid.uuid4().hex[:8]}")
    env.update(extra)
    return env


def start(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    log = log_path.open("wb")
    return subprocess.Popen(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: we can stop it and its workers
    )


def stop(process: subprocess.Popen, *, sig: int = signal.SIGTERM, deadline_s: float = 3) -> int:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):  # workers left behind by a hung parent
        os.killpg(process.pid, signal.SIGKILL)
    return process.returncode


def wait_for(predicate: Callable[[], object], *, timeout: float, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def processes_matching(fragment: str) -> list[int]:
    """Pids whose command line contains ``fragment`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if fragment in cmdline and state != "Z":
            pids.append(int(entry.name))
    return pids
