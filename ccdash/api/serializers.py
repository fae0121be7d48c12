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

ROLE_CHOICES = [role.value for role in Role]


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField()
    password = serializers.CharField(trim_whitespace=False, style={"input_type": "password"})


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(read_only=True)


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


class MemberSerializer(serializers.Serializer):
    """Body of ``POST /api/projects/{id}/members`` and one member in answers."""

    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=ROLE_CHOICES)


class MemberRemoveSerializer(serializers.Serializer):
    """Body of ``DELETE /api/projects/{id}/members``; ``role`` is accepted and ignored."""

    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=ROLE_CHOICES, required=False)
