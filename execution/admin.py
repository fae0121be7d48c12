"""Admin for runs: a read-only view of the canonical record, its audit events,
and a "reconcile now" action. Runs change only through the services and the
state machine, never through a form."""

from __future__ import annotations

import logging

from django.contrib import admin, messages
from django.db.models import QuerySet

from connectors.configs import project_redactor
from execution import reconciler
from execution.models import Run, RunEvent, Stream
from execution.states import ACTIVE_STATUSES, SyncStatus

logger = logging.getLogger(__name__)


class RunEventInline(admin.TabularInline):
    """System and provider events (status changes, audit, provider messages).
    Output lines are left to the workbench and the events API: a long run has
    thousands and this inline cannot page."""

    model = RunEvent
    verbose_name_plural = "Events (system and provider streams)"
    extra = 0
    can_delete = False
    fields = ("sequence_no", "stream", "event_type", "text", "payload", "actor", "occurred_at")
    readonly_fields = fields
    ordering = ("sequence_no",)

    def get_queryset(self, request) -> QuerySet:
        return super().get_queryset(request).filter(stream__in=[Stream.SYSTEM, Stream.PROVIDER])

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "project",
        "provider_id",
        "kind",
        "status",
        "sync_status",
        "degraded",
        "fallback_from_provider_id",
        "created_at",
    )
    list_filter = ("status", "sync_status", "provider_id", "kind", "project")
    search_fields = ("command", "prompt", "provider_run_id", "feature_id")
    date_hierarchy = "created_at"
    list_select_related = ("project",)
    inlines = [RunEventInline]
    actions = ["reconcile_now"]

    def get_readonly_fields(self, request, obj=None):
        return [f.name for f in Run._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(boolean=True, description="Degraded")
    def degraded(self, run: Run) -> bool:
        """An active run whose provider state is not confirmed (spec §3)."""
        return run.status in ACTIVE_STATUSES and run.sync_status != SyncStatus.IN_SYNC

    def has_reconcile_permission(self, request) -> bool:
        """Reconciling writes to runs (status, events), so it needs the change
        permission, although runs have no change form (hence not ``change``)."""
        return request.user.has_perm("execution.change_run")

    @admin.action(description="Reconcile now", permissions=["reconcile"])
    def reconcile_now(self, request, queryset: QuerySet[Run]) -> None:
        actor = request.user.get_username()
        done, failed = 0, []
        for run in queryset:
            try:
                reconciler.reconcile_run(run.pk, actor=actor)
            except Exception as exc:
                message = project_redactor(run.project_id).scrub(str(exc))
                logger.warning("admin reconcile of run %s failed: %s", run.pk, message)
                failed.append(f"run {run.pk}: {message}")
            else:
                done += 1
        if done:
            self.message_user(request, f"Reconciled {done} run(s).", messages.SUCCESS)
        for failure in failed:
            self.message_user(request, f"Could not reconcile {failure}", messages.ERROR)
