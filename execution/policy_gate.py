"""Django glue for the policy engines, chosen by the run's kind.

Command lines go to the command policy (``execution.policy``) with env
profiles from settings and the project's workspace; prompts go to the prompt
policy (``execution.prompt_policy``) with the project's agent settings.
"""

from __future__ import annotations

from django.conf import settings

from execution.models import RunKind
from execution.policy import DEFAULT_ENV_PROFILES, EnvProfile, PolicyDecision, evaluate
from execution.prompt_policy import (
    PromptPolicy,
    compile_patterns,
    evaluate_prompt,
    validate_prompt,
)


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


def prompt_policy_for(project, *, reply: bool = False) -> PromptPolicy:
    """The project's prompt policy. ``reply``: for an answer to a run that is
    already approved and waiting for its user, the project-wide "every agent
    run needs approval" switch does not apply again (the run was approved as a
    whole); the patterns and the length limit do."""
    return PromptPolicy(
        require_approval=bool(project.agent_runs_require_approval) and not reply,
        patterns=compile_patterns(project.prompt_patterns or ()),
        max_length=project.max_prompt_length,
    )


def check_prompt(project, text: str) -> None:
    """Raise ``PromptRejected`` for a prompt that cannot be a run at all
    (empty, whitespace only, NUL bytes, longer than the project allows)."""
    validate_prompt(text, max_length=project.max_prompt_length)


def evaluate_prompt_for(project, text: str, *, reply: bool = False) -> PolicyDecision:
    return evaluate_prompt(text, prompt_policy_for(project, reply=reply))


def evaluate_text(
    project, kind: str, text: str, cwd: str = "", env_profile: str = ""
) -> PolicyDecision:
    """The decision for ``text`` of ``kind``: the prompt policy for prompts,
    the command policy for command lines."""
    if kind == RunKind.PROMPT:
        return evaluate_prompt_for(project, text)
    return evaluate_for(project, text, cwd, env_profile)


def evaluate_run(run) -> PolicyDecision:
    return evaluate_text(run.project, run.kind, run.text, run.cwd, run.env_profile)
