"""The small core: projects and who may do what in them."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from ccdash.roles import Action, Role, role_allows
from ccdash.workspaces import validate_workspace_root


class ProjectQuerySet(models.QuerySet):
    def for_user(self, user) -> ProjectQuerySet:
        """Projects the user is a member of (every API query starts here)."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(memberships__user=user)


class Project(models.Model):
    name = models.CharField(max_length=200)
    workspace_root = models.CharField(
        max_length=1000,
        validators=[validate_workspace_root],
        help_text="Absolute directory local runs are confined to; "
        "it must lie inside EXECUTION_WORKSPACES_ROOT.",
    )
    default_provider_id = models.CharField(max_length=64, default="local")
    allow_fallback_to_local = models.BooleanField(
        default=True,
        help_text="Run locally when the chosen provider is disabled, unhealthy or tripped.",
    )
    allow_self_approval = models.BooleanField(
        default=False,
        help_text="Let the creator of a run approve it (one-person projects). "
        "Off: another approver must (four eyes).",
    )
    # Agent (prompt) runs: see execution.prompt_policy and execution.dispatch.
    agent_runs_require_approval = models.BooleanField(
        default=False, help_text="Every prompt to a coding agent waits for an approver."
    )
    prompt_patterns = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"pattern": regex, "reasonCode": code}]: a matching prompt needs approval.',
    )
    max_prompt_length = models.PositiveIntegerField(
        default=20_000, help_text="Longer prompts are refused."
    )
    agent_fallback_chain = models.JSONField(
        default=list,
        blank=True,
        help_text="Prompt providers to try, in order, when an agent provider is unavailable.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ProjectQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name

    def role_of(self, user) -> str | None:
        if not user.is_authenticated:
            return None
        membership = self.memberships.filter(user=user).only("role").first()
        return membership.role if membership else None

    def user_can(self, user, action: Action) -> bool:
        return role_allows(self.role_of(user), action)


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=[(r.value, r.value) for r in Role])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="unique_project_member")
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.project} ({self.role})"


class AuditLog(models.Model):
    """Project-level audit trail for actions that are not about one run
    (provider config and credential changes, membership changes). Run actions
    are audited as run events. Never holds a secret value."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="audit_log")
    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=64)
    message = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M} {self.actor} {self.action}"


def record_audit(project: Project, actor: str, action: str, message: str = "", **payload) -> None:
    AuditLog.objects.create(
        project=project, actor=actor or "system", action=action, message=message, payload=payload
    )
