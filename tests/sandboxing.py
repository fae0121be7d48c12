"""Helpers for tests of the bubblewrap sandbox: find bwrap (skip only off CI),
and find or clean up the processes a test started, by a unique marker."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import uuid
from pathlib import Path

import pytest

INSTALL = "apt-get install bubblewrap"


def require_bwrap() -> str:
    """The bwrap executable. Missing: the test fails in CI (``CI=true``, where
    ``.ci/run`` installs it), and is skipped with the reason anywhere else."""
    found = shutil.which("bwrap")
    if found:
        return found
    message = f"bubblewrap (bwrap) is not installed: {INSTALL}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run the sandbox tests", pytrace=False)
    pytest.skip(message)


def unique_seconds(whole: int = 300) -> str:
    """A ``sleep`` argument no other process on the machine has: a marker in /proc."""
    return f"{whole}.{uuid.uuid4().int % 10**9:09d}"


def live_processes_with(argument: str) -> list[int]:
    """Host pids of live ``sleep <argument>`` processes. Only ``sleep`` itself:
    not bwrap or ``setsid``, whose command lines hold the same words."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if argv[:2] == [b"sleep", argument.encode()] and state != "Z":
            pids.append(int(entry.name))
    return pids


def kill_processes_with(argument: str) -> None:
    """Clean up what a failing test left running."""
    for pid in live_processes_with(argument):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
