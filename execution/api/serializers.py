"""Serializers of the execution API (spec §5).

Field names are the camelCase names the workbench client relies on; each maps
to the model attribute with ``source=``, so validation errors come back keyed
by the name the client sent.
"""

from __future__ import annotations

from django.core.validators import ProhibitNullCharactersValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from connectors.links import web_url
from execution.api.fast import FastRepresentationMixin
from execution.models import PolicyVerdict, RiskLevel, Run, RunEvent, RunKind, Stream
from execution.states import ACTIVE_STATUSES, CancelState, RunStatus, SyncStatus

# Spec §5 caps one events page; the default keeps a poll cheap.
EVENTS_DEFAULT_LIMIT = 200
EVENTS_MAX_LIMIT = 1000


# A hard cap on prompt bodies; each project's maxPromptLength (at most this)
# is the limit that applies, answered as prompt_too_long.
PROMPT_FIELD_MAX = 100_000


class PromptField(serializers.CharField):
    """Prompt text, taken as sent: no trimming, and blank or NUL-bearing text
    reaches the prompt policy, which answers it with its own code
    (``prompt_empty``, ``prompt_nul``, ``prompt_too_long``)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("max_length", PROMPT_FIELD_MAX)
        super().__init__(**kwargs)
        self.validators = [
            v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)
        ]


class RunSerializer(FastRepresentationMixin, serializers.ModelSerializer):
    """One run: the canonical record, whatever the provider. Read-only.

    Absent provider values are empty strings (``providerRunId: ""`` before
    dispatch), absent times and ids ``null``. ``degraded`` is true for an active
    run whose provider state could not be confirmed (``syncStatus`` not
    ``in_sync``).
    """

    projectId = serializers.IntegerField(source="project_id")
    featureId = serializers.CharField(source="feature_id")
    recommendationRuleId = serializers.CharField(source="recommendation_rule_id")
    providerId = serializers.CharField(source="provider_id")
    providerRunId = serializers.CharField(source="provider_run_id")
    providerUrl = serializers.SerializerMethodField(
        help_text="The run on the provider's site: an http(s) URL, or empty."
    )
    providerStatusRaw = serializers.CharField(source="provider_status_raw")
    status = serializers.ChoiceField(choices=RunStatus.choices)
    statusReason = serializers.CharField(source="status_reason")
    syncStatus = serializers.ChoiceField(source="sync_status", choices=SyncStatus.choices)
    lastReconciledAt = serializers.DateTimeField(source="last_reconciled_at", allow_null=True)
    nextReconcileAt = serializers.DateTimeField(source="next_reconcile_at", allow_null=True)
    reconcileAttempts = serializers.IntegerField(source="reconcile_attempts")
    lastSyncError = serializers.CharField(source="last_sync_error")
    fallbackFromProviderId = serializers.CharField(source="fallback_from_provider_id")
    envProfile = serializers.CharField(source="env_profile")
    policyVerdict = serializers.ChoiceField(source="policy_verdict", choices=PolicyVerdict.choices)
    riskLevel = serializers.ChoiceField(source="risk_level", choices=RiskLevel.choices)
    reasonCodes = serializers.ListField(source="reason_codes", child=serializers.CharField())
    requiresApproval = serializers.BooleanField(source="requires_approval")
    approvedBy = serializers.CharField(
        source="approved_by.username", allow_null=True, help_text="Username of the approver."
    )
    approvedAt = serializers.DateTimeField(source="approved_at", allow_null=True)
    exitCode = serializers.IntegerField(source="exit_code", allow_null=True)
    retryOfRunId = serializers.IntegerField(source="retry_of_id", allow_null=True)
    followUpOfRunId = serializers.IntegerField(
        source="follow_up_of_id",
        allow_null=True,
        help_text="The finished run whose agent this follow-up continues.",
    )
    kind = serializers.ChoiceField(
        choices=RunKind.choices,
        help_text="command: a command line (in command); prompt: an instruction for a "
        "coding agent (in prompt). The other field is empty.",
    )
    createdAt = serializers.DateTimeField(source="created_at")
    startedAt = serializers.DateTimeField(source="started_at", allow_null=True)
    endedAt = serializers.DateTimeField(source="ended_at", allow_null=True)
    degraded = serializers.SerializerMethodField()
    cancelConfirmed = serializers.SerializerMethodField(
        help_text="null: no cancel sent to a provider; false: requested, the provider has "
        "not accepted it yet (it is sent again until it does); true: the provider accepted it."
    )
    cancelError = serializers.CharField(
        source="cancel_error", help_text="Why the provider last refused the cancel."
    )

    class Meta:
        model = Run
        fields = [
            "id",
            "projectId",
            "featureId",
            "recommendationRuleId",
            "providerId",
            "providerRunId",
            "providerUrl",
            "providerStatusRaw",
            "status",
            "statusReason",
            "syncStatus",
            "lastReconciledAt",
            "nextReconcileAt",
            "reconcileAttempts",
            "lastSyncError",
            "fallbackFromProviderId",
            "kind",
            "command",
            "prompt",
            "cwd",
            "envProfile",
            "policyVerdict",
            "riskLevel",
            "reasonCodes",
            "requiresApproval",
            "approvedBy",
            "approvedAt",
            "exitCode",
            "retryOfRunId",
            "followUpOfRunId",
            "createdAt",
            "startedAt",
            "endedAt",
            "degraded",
            "cancelConfirmed",
            "cancelError",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_providerUrl(self, run: Run) -> str:
        # Stored values are filtered already (connectors.base); rows written
        # before that filter existed are filtered here.
        return web_url(run.provider_url)

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_degraded(self, run: Run) -> bool:
        return run.status in ACTIVE_STATUSES and run.sync_status != SyncStatus.IN_SYNC

    @extend_schema_field({"type": "boolean", "nullable": True})
    def get_cancelConfirmed(self, run: Run) -> bool | None:
        if run.cancel_state == CancelState.NONE:
            return None
        return run.cancel_state == CancelState.ACCEPTED


class RunCreateSerializer(serializers.Serializer):
    """Body of ``POST runs``. Omitted ``providerId``: the project's default, then
    ``local``; omitted ``envProfile``: ``default``; omitted ``cwd``: the
    workspace root.

    Send ``command`` to a command provider (``local``, ``github_actions``) and
    ``prompt`` to a prompt provider (``cursor``, ``devin``; ``command`` is
    accepted there too, as older clients send it). A prompt to a command
    provider, or both fields, is a 400 naming ``prompt``. ``cwd`` and
    ``envProfile`` apply to command runs only."""

    projectId = serializers.IntegerField(min_value=1)
    command = serializers.CharField(max_length=10_000, required=False)
    prompt = PromptField(
        required=False,
        help_text="Instruction for a coding agent (prompt providers). At most the "
        "project's maxPromptLength characters; not empty, no NUL bytes.",
    )
    providerId = serializers.CharField(max_length=64, required=False, allow_blank=True)
    featureId = serializers.CharField(max_length=200, required=False, allow_blank=True)
    recommendationRuleId = serializers.CharField(max_length=200, required=False, allow_blank=True)
    cwd = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    envProfile = serializers.CharField(max_length=100, required=False, allow_blank=True)
    idempotencyKey = serializers.CharField(
        max_length=200,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="Sending the same key again in the project returns the run it created.",
    )


class PolicyCheckRequestSerializer(serializers.Serializer):
    """Body of ``POST policy-check``: what a run would be evaluated on. The
    provider (``providerId``, else the project's default) picks the policy:
    the command policy for ``command``, the prompt policy for ``prompt``."""

    projectId = serializers.IntegerField(min_value=1)
    providerId = serializers.CharField(max_length=64, required=False, allow_blank=True)
    command = serializers.CharField(max_length=10_000, required=False)
    prompt = PromptField(required=False)
    cwd = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    envProfile = serializers.CharField(max_length=100, required=False, allow_blank=True)


# Labels say what each verdict does to a run. (They also give this enum its own
# schema component: drf-spectacular warns when one choice set gets two names,
# here ``verdict`` and the run's ``policyVerdict``.)
VERDICT_CHOICES = [
    (PolicyVerdict.ALLOW, "allow: the run would be queued"),
    (PolicyVerdict.REQUIRES_APPROVAL, "requires_approval: the run would await an approver"),
    (PolicyVerdict.DENY, "deny: the run would be blocked"),
]


class PolicyCheckSerializer(serializers.Serializer):
    """The policy decision, as a run created now would record it."""

    kind = serializers.ChoiceField(
        choices=RunKind.choices, help_text="Which policy answered: command or prompt."
    )
    verdict = serializers.ChoiceField(choices=VERDICT_CHOICES)
    riskLevel = serializers.ChoiceField(source="risk", choices=RiskLevel.choices)
    reasonCodes = serializers.ListField(source="reason_codes", child=serializers.CharField())
    messages = serializers.ListField(child=serializers.CharField())
    requiresApproval = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.BOOL)
    def get_requiresApproval(self, decision) -> bool:
        return decision.verdict == PolicyVerdict.REQUIRES_APPROVAL


class RunEventSerializer(serializers.ModelSerializer):
    sequenceNo = serializers.IntegerField(source="sequence_no")
    stream = serializers.ChoiceField(choices=Stream.choices)
    eventType = serializers.CharField(source="event_type")
    occurredAt = serializers.DateTimeField(source="occurred_at")

    class Meta:
        model = RunEvent
        fields = ["sequenceNo", "stream", "eventType", "text", "payload", "occurredAt", "actor"]
        read_only_fields = fields


class EventPageQuerySerializer(serializers.Serializer):
    """Query string of ``GET runs/{id}/events``. A ``limit`` above the maximum
    is clamped, not refused, like DRF's own ``max_limit``."""

    afterSequence = serializers.IntegerField(min_value=0, required=False, default=0)
    limit = serializers.IntegerField(min_value=1, required=False, default=EVENTS_DEFAULT_LIMIT)

    def validate_limit(self, value: int) -> int:
        return min(value, EVENTS_MAX_LIMIT)


class EventPageSerializer(serializers.Serializer):
    """One page of events. Poll again with ``afterSequence=nextSequence``:
    ``nextSequence`` is the last returned ``sequenceNo``, or the requested
    ``afterSequence`` when the page is empty."""

    items = RunEventSerializer(many=True)
    nextSequence = serializers.IntegerField()


class ApproveSerializer(serializers.Serializer):
    """Optional body of ``POST runs/{id}/approve``; ``decision: reject`` rejects."""

    decision = serializers.ChoiceField(
        choices=["approve", "reject"], required=False, default="approve"
    )
    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class RejectSerializer(serializers.Serializer):
    """Optional body of ``POST runs/{id}/reject``."""

    comment = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")


class MessageSerializer(serializers.Serializer):
    """Body of ``POST runs/{id}/messages``: the answer to a waiting agent."""

    text = PromptField(help_text="The answer; checked like a prompt.")


class FollowUpSerializer(serializers.Serializer):
    """Body of ``POST runs/{id}/follow-up``: new work for the same agent."""

    prompt = PromptField(help_text="The follow-up instruction; checked like any prompt.")
