"""Django glue for the policy engine: env profiles from settings, a project's
workspace, a run's fields."""

from __future__ import annotations

from django.conf import settings

from execution.policy import DEFAULT_ENV_PROFILES, EnvProfile, PolicyDecision, evaluate


def env_profiles() -> dict[str, EnvProfile]:
    """``EXECUTION_ENV_PROFILES`` from settings (name → EnvProfile), else the defaults."""
    configured = getattr(settings, "EXECUTION_ENV_PROFILES", None)
    return dict(configured) if configured else dict(DEFAULT_ENV_PROFILES)


def evaluate_for(project, command: str, cwd: str = "", env_profile: str = "") -> PolicyDecision:
    return evaluate(
        command,
        workspace_root=project.workspace_root,
        cwd=cwd or None,
        env_profile=env_profile or None,
        env_profiles=env_profiles(),
    )


def evaluate_run(run) -> PolicyDecision:
    return evaluate_for(run.project, run.command, run.cwd, run.env_profile)
