"""Serializers of the core API: auth token, projects, members.

Field names are camelCase (spec §5) and map to model attributes with
``source=``, so validation errors come back keyed by the names the client sent.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from ccdash.models import Project
from ccdash.roles import Role
from ccdash.workspaces import validate_workspace_root
from connectors.errors import UnknownProvider
from connectors.registry import adapter_class
from execution.prompt_policy import compile_patterns

ROLE_CHOICES = [role.value for role in Role]


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True, help_text="Shown once; only a digest is kept.")
    expiry = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When the token stops working."
    )


class ProjectSerializer(serializers.ModelSerializer):
    """A project as its members see it; ``role`` is the caller's own role.

    Reads ``caller_role`` annotated by ``ccdash.api.permissions.scoped_projects``
    (or set by the view on a freshly created project).
    """

    workspaceRoot = serializers.CharField(source="workspace_root", max_length=1000)
    defaultProviderId = serializers.CharField(
        source="default_provider_id", max_length=64, required=False, default="local"
    )
    allowFallbackToLocal = serializers.BooleanField(
        source="allow_fallback_to_local", required=False, default=True
    )
    allowSelfApproval = serializers.BooleanField(
        source="allow_self_approval",
        required=False,
        default=False,
        help_text="Let a run's creator approve it. Off (the default): another "
        "approver must (four eyes); approving your own run answers 403 self_approval.",
    )
    agentRunsRequireApproval = serializers.BooleanField(
        source="agent_runs_require_approval",
        read_only=True,
        help_text="Every prompt to a coding agent waits for an approver.",
    )
    promptPatterns = serializers.ListField(
        source="prompt_patterns",
        child=serializers.DictField(child=serializers.CharField()),
        read_only=True,
        help_text='[{"pattern", "reasonCode"}]: a prompt matching a pattern '
        "(case-insensitive regular expression) waits for an approver with that reason code.",
    )
    maxPromptLength = serializers.IntegerField(
        source="max_prompt_length", read_only=True, help_text="Longer prompts are refused (400)."
    )
    agentFallbackChain = serializers.ListField(
        source="agent_fallback_chain",
        child=serializers.CharField(),
        read_only=True,
        help_text="Prompt providers tried in order when an agent provider is unavailable; "
        "empty: the run fails as provider_unavailable.",
    )
    role = serializers.ChoiceField(
        source="caller_role", choices=ROLE_CHOICES, read_only=True, allow_null=True
    )
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = Project
        fields = [
            "id",
            "name",
            "workspaceRoot",
            "defaultProviderId",
            "allowFallbackToLocal",
            "allowSelfApproval",
            "agentRunsRequireApproval",
            "promptPatterns",
            "maxPromptLength",
            "agentFallbackChain",
            "role",
            "createdAt",
        ]
        read_only_fields = ["id"]

    def validate_workspaceRoot(self, value: str) -> str:
        # Local runs are confined to this directory, so it must be real now and
        # inside the operator's workspaces root (ccdash.workspaces says why).
        try:
            return validate_workspace_root(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate_defaultProviderId(self, value: str) -> str:
        try:
            adapter_class(value)
        except UnknownProvider:
            raise serializers.ValidationError(f"Unknown provider {value!r}.") from None
        return value


REASON_CODE = r"^[a-z][a-z0-9_]{0,63}$"
MAX_PATTERNS = 50
MAX_PATTERN_LENGTH = 500
MAX_CHAIN = 10


class PromptPatternSerializer(serializers.Serializer):
    pattern = serializers.CharField(max_length=MAX_PATTERN_LENGTH)
    reasonCode = serializers.RegexField(
        REASON_CODE,
        help_text="snake_case, stored on the run's reasonCodes when the pattern matches.",
    )


class ProjectSettingsSerializer(serializers.Serializer):
    """Body of ``PATCH /api/projects/{id}/``: any subset of the settings; a
    field not sent keeps its value. Unknown or read-only fields are a 400."""

    name = serializers.CharField(max_length=200)
    defaultProviderId = serializers.CharField(max_length=64)
    allowFallbackToLocal = serializers.BooleanField()
    allowSelfApproval = serializers.BooleanField()
    agentRunsRequireApproval = serializers.BooleanField()
    promptPatterns = PromptPatternSerializer(many=True, max_length=MAX_PATTERNS)
    maxPromptLength = serializers.IntegerField(min_value=1, max_value=100_000)
    agentFallbackChain = serializers.ListField(
        child=serializers.CharField(max_length=64), max_length=MAX_CHAIN
    )

    def validate_defaultProviderId(self, value: str) -> str:
        try:
            adapter_class(value)
        except UnknownProvider:
            raise serializers.ValidationError(f"Unknown provider {value!r}.") from None
        return value

    def validate_promptPatterns(self, value: list[dict]) -> list[dict]:
        try:
            compile_patterns(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None
        return [{"pattern": p["pattern"], "reasonCode": p["reasonCode"]} for p in value]

    def validate_agentFallbackChain(self, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise serializers.ValidationError("A provider appears twice.")
        for provider_id in value:
            try:
                cls = adapter_class(provider_id)
            except UnknownProvider:
                raise serializers.ValidationError(f"Unknown provider {provider_id!r}.") from None
            if cls.input_kind != "prompt":
                # A prompt never falls back to a provider that runs command lines.
                raise serializers.ValidationError(
                    f"{cls.label} runs command lines; the chain takes prompt providers only."
                )
        return value


class MemberSerializer(serializers.Serializer):
    """Body of ``POST /api/projects/{id}/members`` and one member in answers."""

    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=ROLE_CHOICES)


class MemberRemoveSerializer(serializers.Serializer):
    """Body of ``DELETE /api/projects/{id}/members``; ``role`` is accepted and ignored."""

    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=ROLE_CHOICES, required=False)
