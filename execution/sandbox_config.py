"""Whether local runs are sandboxed, from the ``EXECUTION_SANDBOX`` setting.

* ``bwrap`` (the default, also when the setting is empty): every local run
  executes under bubblewrap (``execution.sandbox``), found as
  ``EXECUTION_BWRAP`` (a name looked up on ``PATH``, or a path). Without it the
  sandbox is *unavailable*: the local provider reports itself unhealthy and
  local runs fail with ``sandbox_unavailable``; nothing runs unsandboxed by
  accident.
* ``none``: an explicit opt-out. Runs use only the process-group isolation of
  ``execution.runner``; a system check warns at startup and ``GET providers``
  shows the local provider as unsandboxed.
"""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from typing import Literal

from django.conf import settings

from execution.sandbox import BwrapSandbox, probe

SandboxMode = Literal["bwrap", "none", "unavailable"]
CHOICES = ("bwrap", "none")
INSTALL_HINT = (
    "Install bubblewrap (apt-get install bubblewrap), or set EXECUTION_SANDBOX=none "
    "to run local commands without a sandbox."
)


@dataclass(frozen=True)
class SandboxChoice:
    """The sandbox local runs get in this process: ``mode`` as the API shows it,
    the bwrap executable when it is used, and a sentence for people."""

    mode: SandboxMode
    bwrap: str | None
    message: str

    def for_workspace(self, workspace: str, *, share_network: bool) -> BwrapSandbox | None:
        """The sandbox of one run, ``None`` for ``none``. Not for ``unavailable``."""
        if self.mode == "none":
            return None
        if self.bwrap is None:
            raise RuntimeError("the sandbox is unavailable")
        return BwrapSandbox(bwrap=self.bwrap, workspace=workspace, share_network=share_network)


def configured_mode() -> str:
    """``EXECUTION_SANDBOX`` normalised; an empty value means the default, ``bwrap``."""
    return (getattr(settings, "EXECUTION_SANDBOX", "") or "bwrap").strip().lower()


def current_sandbox() -> SandboxChoice:
    """What the settings and this machine give, without starting anything."""
    mode = configured_mode()
    if mode == "none":
        return SandboxChoice(
            "none",
            None,
            "Local runs are not sandboxed (EXECUTION_SANDBOX=none): commands run with "
            "the worker's file system and network.",
        )
    if mode != "bwrap":
        return SandboxChoice(
            "unavailable",
            None,
            f"EXECUTION_SANDBOX must be one of {', '.join(CHOICES)}, not {mode!r}.",
        )
    wanted = getattr(settings, "EXECUTION_BWRAP", "") or "bwrap"
    found = shutil.which(wanted)
    if found is None:
        return SandboxChoice(
            "unavailable", None, f"bubblewrap ({wanted}) was not found. {INSTALL_HINT}"
        )
    return SandboxChoice("bwrap", found, f"Local runs are sandboxed with bubblewrap ({found}).")


_working: set[str] = set()
_working_lock = threading.Lock()


def usable_sandbox() -> SandboxChoice:
    """:func:`current_sandbox`, with bwrap tried once per process before it is used.

    bwrap can be installed and still unable to create namespaces here; that
    makes the sandbox unavailable (with bwrap's own words) rather than failing
    every run with a puzzling exit status 1. Only success is remembered, so
    fixing the host needs no restart.
    """
    choice = current_sandbox()
    if choice.mode != "bwrap" or choice.bwrap is None:
        return choice
    with _working_lock:
        if choice.bwrap in _working:
            return choice
    problem = probe(choice.bwrap)
    if problem is not None:
        return SandboxChoice("unavailable", None, f"{problem} {INSTALL_HINT}")
    with _working_lock:
        _working.add(choice.bwrap)
    return choice
