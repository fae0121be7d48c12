"""System checks of the executor's settings, shown by ``runserver``,
``qcluster``, ``migrate`` and ``manage.py check`` when they start."""

from __future__ import annotations

from django.core.checks import CheckMessage, Error, Tags, Warning, register

from execution.sandbox_config import CHOICES, configured_mode, current_sandbox


@register(Tags.security)
def check_sandbox(app_configs=None, **kwargs) -> list[CheckMessage]:
    """Unsandboxed local runs are an explicit opt-out, said out loud at startup."""
    mode = configured_mode()
    if mode not in CHOICES:
        return [
            Error(
                f"EXECUTION_SANDBOX is {mode!r}; it must be one of {', '.join(CHOICES)}.",
                hint="Unset it to sandbox local runs with bubblewrap.",
                id="execution.E001",
            )
        ]
    choice = current_sandbox()
    if choice.mode == "none":
        return [
            Warning(
                "Local runs are NOT sandboxed (EXECUTION_SANDBOX=none): commands can read "
                "and write what the worker can, and use its network.",
                hint="Install bubblewrap (apt-get install bubblewrap) and unset EXECUTION_SANDBOX.",
                id="execution.W001",
            )
        ]
    if choice.mode == "unavailable":
        return [
            Warning(
                "Local runs will fail with sandbox_unavailable: " + choice.message,
                id="execution.W002",
            )
        ]
    return []
