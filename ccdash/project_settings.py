"""Editing a project's settings: one place that applies a change and audits it.

``PATCH /api/projects/{id}/`` (project admins) calls ``update_settings`` with
the validated changes; each field whose value really changes gets one audit
entry with its old and new value, in the same transaction as the change.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from ccdash.models import Project, record_audit

# API name → model attribute of every setting PATCH may change.
EDITABLE_SETTINGS: dict[str, str] = {
    "name": "name",
    "defaultProviderId": "default_provider_id",
    "allowFallbackToLocal": "allow_fallback_to_local",
    "allowSelfApproval": "allow_self_approval",
    "agentRunsRequireApproval": "agent_runs_require_approval",
    "promptPatterns": "prompt_patterns",
    "maxPromptLength": "max_prompt_length",
    "agentFallbackChain": "agent_fallback_chain",
}
# Known, shown, but not editable here (with the reason the API answers).
READ_ONLY_SETTINGS: dict[str, str] = {
    "id": "The id never changes.",
    "workspaceRoot": "The workspace root is fixed at creation; create another project instead.",
    "role": "Your role is changed through the members API.",
    "createdAt": "Read-only.",
}


def update_settings(project: Project, actor: str, changes: dict[str, Any]) -> list[str]:
    """Apply ``changes`` (API name → new value); returns the names that changed."""
    changed: list[str] = []
    with transaction.atomic():
        locked = Project.objects.select_for_update().get(pk=project.pk)
        for name, value in changes.items():
            attribute = EDITABLE_SETTINGS[name]
            old = getattr(locked, attribute)
            if old == value:
                continue
            setattr(locked, attribute, value)
            changed.append(name)
            record_audit(
                locked,
                actor,
                "project_setting_changed",
                f"{name} changed by {actor}.",
                setting=name,
                old=old,
                new=value,
            )
        if changed:
            locked.save(update_fields=[EDITABLE_SETTINGS[name] for name in changed])
    for name in changed:
        setattr(project, EDITABLE_SETTINGS[name], getattr(locked, EDITABLE_SETTINGS[name]))
    return changed
