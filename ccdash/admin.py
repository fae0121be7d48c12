"""Admin for projects, their members and their audit log.

The admin is the platform operators' console (staff users). The project's
default provider is set from the provider config ("is default"), so the two
never disagree; it is shown read-only here. The audit log is append-only.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from ccdash.models import AuditLog, Membership, Project


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "workspace_root",
        "default_provider_id",
        "allow_fallback_to_local",
        "created_at",
    )
    search_fields = ("name",)
    fields = (
        "name",
        "workspace_root",
        "default_provider_id",
        "allow_fallback_to_local",
        "allow_self_approval",
        "agent_runs_require_approval",
        "prompt_patterns",
        "max_prompt_length",
        "agent_fallback_chain",
        "links",
        "created_at",
    )
    # Agent-run settings are validated and audited by PATCH /api/projects/{id}/.
    readonly_fields = (
        "default_provider_id",
        "agent_runs_require_approval",
        "prompt_patterns",
        "max_prompt_length",
        "agent_fallback_chain",
        "links",
        "created_at",
    )
    inlines = [MembershipInline]

    @admin.display(description="See also")
    def links(self, obj: Project) -> str:
        if obj.pk is None:
            return "-"
        return format_html(
            '<a href="{}?project__id__exact={}">Audit log</a> · '
            '<a href="{}?project__id__exact={}">Provider configs</a>',
            reverse("admin:ccdash_auditlog_changelist"),
            obj.pk,
            reverse("admin:connectors_providerconfig_changelist"),
            obj.pk,
        )


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    """Read-only: an audit trail nobody edits."""

    list_display = ("occurred_at", "project", "actor", "action", "message")
    list_filter = ("action", "project")
    search_fields = ("actor", "action", "message")
    date_hierarchy = "occurred_at"
    readonly_fields = ("project", "actor", "action", "message", "payload", "occurred_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
