"""Runs and their append-only events: the one canonical record of every run."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from execution.states import CancelState, RunStatus, SyncStatus


class Stream(models.TextChoices):
    SYSTEM = "system"
    STDOUT = "stdout"
    STDERR = "stderr"
    PROVIDER = "provider"


class PolicyVerdict(models.TextChoices):
    ALLOW = "allow"
    REQUIRES_APPROVAL = "requires_approval"
    DENY = "deny"


class RiskLevel(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class RunKind(models.TextChoices):
    """What a run carries: a command line or a prompt for a coding agent. Fixed
    at creation from the provider's ``input_kind``; fallback never changes it."""

    COMMAND = "command"
    PROMPT = "prompt"


class Run(models.Model):
    project = models.ForeignKey("ccdash.Project", on_delete=models.CASCADE, related_name="runs")
    feature_id = models.CharField(max_length=200, blank=True, default="")
    recommendation_rule_id = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # NULL, not "", so the partial unique constraint ignores runs without a key.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001

    # What to run, and where. Exactly one of command/prompt is set, by kind:
    # a prompt run has no command line, so nothing can hand it to a shell.
    kind = models.CharField(max_length=16, choices=RunKind.choices, default=RunKind.COMMAND)
    command = models.TextField(blank=True, default="")
    prompt = models.TextField(blank=True, default="")
    cwd = models.CharField(max_length=1000, blank=True, default="")
    env_profile = models.CharField(max_length=100, default="default")

    # Policy outcome, fixed at creation.
    policy_verdict = models.CharField(max_length=32, choices=PolicyVerdict.choices)
    risk_level = models.CharField(max_length=16, choices=RiskLevel.choices)
    reason_codes = models.JSONField(default=list, blank=True)
    requires_approval = models.BooleanField(default=False)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)

    # Canonical lifecycle.
    status = models.CharField(
        max_length=32, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True
    )
    status_reason = models.CharField(max_length=200, blank=True, default="")
    exit_code = models.IntegerField(null=True, blank=True)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    # A follow-up prompt on the agent (or session) of this earlier, finished run.
    follow_up_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="follow_ups"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    # Provider side.
    provider_id = models.CharField(max_length=64, default="local", db_index=True)
    fallback_from_provider_id = models.CharField(max_length=64, blank=True, default="")
    # Persisted before the provider is called, so a retried dispatch can find
    # the external run it already created instead of creating a second one.
    dispatch_key = models.CharField(max_length=64, blank=True, default="")
    dispatch_attempts = models.PositiveIntegerField(default=0)
    provider_run_id = models.CharField(max_length=200, blank=True, default="")
    provider_url = models.CharField(max_length=1000, blank=True, default="")
    provider_status_raw = models.CharField(max_length=200, blank=True, default="")
    provider_state = models.JSONField(
        default=dict,
        blank=True,
        help_text="Adapter-owned data (its ids); the engine never reads it.",
    )

    # Reconciliation.
    sync_status = models.CharField(
        max_length=16, choices=SyncStatus.choices, default=SyncStatus.IN_SYNC, db_index=True
    )
    last_reconciled_at = models.DateTimeField(null=True, blank=True)
    next_reconcile_at = models.DateTimeField(null=True, blank=True)
    reconcile_attempts = models.PositiveIntegerField(default=0)
    last_sync_error = models.TextField(blank=True, default="")
    # When polling started failing; stale once this is older than the threshold.
    sync_failing_since = models.DateTimeField(null=True, blank=True)
    # Cancel of an external run (execution.cancels): where it stands with the
    # provider, how often it was refused, the last refusal, the next retry.
    cancel_state = models.CharField(
        max_length=16, choices=CancelState.choices, blank=True, default=CancelState.NONE
    )
    cancel_attempts = models.PositiveIntegerField(default=0)
    cancel_error = models.TextField(blank=True, default="")
    cancel_next_at = models.DateTimeField(null=True, blank=True)
    # The reconciler's own log bookkeeping: the cursor the adapter handed back
    # with the last stored output (passed back to it as an argument), and when.
    log_cursor = models.JSONField(default=dict, blank=True)
    logs_fetched_at = models.DateTimeField(null=True, blank=True)
    lease_owner = models.CharField(max_length=100, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    # Local runs: the worker executing it beats here.
    worker_id = models.CharField(max_length=100, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    # Last allocated event sequence number (events are numbered 1..n per run).
    last_sequence_no = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-id"]
        # The run list is newest first inside one project, filtered by at most
        # a few equalities: one (project, <filter>, -id) index per filter lets
        # the page and its count read only the rows they return or count.
        indexes = [
            models.Index(fields=["project", "status", "-id"], name="run_project_status"),
            models.Index(fields=["project", "-id"], name="run_project_newest"),
            models.Index(fields=["project", "provider_id", "-id"], name="run_project_provider"),
            models.Index(fields=["project", "sync_status", "-id"], name="run_project_sync"),
            models.Index(fields=["project", "feature_id", "-id"], name="run_project_feature"),
            models.Index(fields=["project", "created_by", "-id"], name="run_project_creator"),
            models.Index(fields=["status", "next_reconcile_at"], name="run_due"),
        ]
        constraints = [
            # A run is retried at most once: concurrent retries create one run.
            models.UniqueConstraint(
                fields=["retry_of"],
                condition=models.Q(retry_of__isnull=False),
                name="unique_retry_of",
            ),
            models.UniqueConstraint(
                fields=["project", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="unique_run_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.provider_id}, {self.status})"

    @property
    def cancel_unconfirmed(self) -> bool:
        """A cancel was asked for and the provider has not accepted it yet."""
        return self.status == RunStatus.CANCELING and self.cancel_state == CancelState.PENDING

    @property
    def text(self) -> str:
        """The command line or the prompt, whichever the run's kind carries."""
        return self.prompt if self.kind == RunKind.PROMPT else self.command


class RunEvent(models.Model):
    """Append-only: rows are inserted by ``execution.events`` and never updated."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    sequence_no = models.PositiveIntegerField()
    stream = models.CharField(max_length=16, choices=Stream.choices)
    event_type = models.CharField(max_length=64)
    text = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=150, blank=True, default="")
    occurred_at = models.DateTimeField()

    class Meta:
        ordering = ["run", "sequence_no"]
        constraints = [
            models.UniqueConstraint(fields=["run", "sequence_no"], name="unique_run_event_sequence")
        ]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.sequence_no} {self.event_type}"


class ReconcileCounter(models.Model):
    """Reconciler metrics shared by every process (issue 5).

    Reconcilers run in other processes and machines than the web server, so
    their counters live here: each sweep adds its totals with one ``F()``
    update per key, and ``/metrics`` reads them at scrape time. ``kind`` is the
    label that varies (outcome, error kind, histogram bucket); gauges written
    by a sweep (last duration, last end time) are stored as plain values.
    """

    metric = models.CharField(max_length=64)
    provider_id = models.CharField(max_length=64, blank=True, default="")
    kind = models.CharField(max_length=64, blank=True, default="")
    value = models.FloatField(default=0.0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["metric", "provider_id", "kind"], name="unique_reconcile_counter"
            )
        ]

    def __str__(self) -> str:
        return f"{self.metric}{{{self.provider_id},{self.kind}}}={self.value}"
