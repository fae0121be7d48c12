"""Provider API: list providers, write config and credentials, check health.

Scoping and roles follow ``ccdash.api.permissions``: a project outside the
caller's projects answers 404, a role below the action's minimum 403, no
authentication 401. Reading is for every member; config, credentials and health checks
(which send the stored credentials) for project admins.

Validation errors of the adapter are answered nested under the body key they
belong to, so a client maps them straight back onto the field it sent::

    400 {"error": {"code": "invalid_config", "message": "Invalid … settings.",
                   "fields": {"settings": {"baseUrl": ["Must be an http(s) URL."]}}}}
    400 {"error": {"code": "invalid_credentials", "message": "…",
                   "fields": {"credentials": {"zzUnknown": ["Unknown credential field."]}}}}

Envelope problems (a missing ``projectId``, ``enabled`` not a boolean) use
the top-level keys as every other endpoint (``fields.projectId``).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ccdash.api.errors import ApiError
from ccdash.api.permissions import get_project_for
from ccdash.api.schema import ERROR_RESPONSES
from ccdash.models import Project
from ccdash.roles import Action
from connectors import services
from connectors.api.serializers import (
    HealthSerializer,
    MaskedCredentialsSerializer,
    ProjectRefSerializer,
    ProviderConfigBodySerializer,
    ProviderCredentialsBodySerializer,
    ProviderSerializer,
    provider_view,
)
from connectors.base import ProviderAdapter
from connectors.errors import ConfigurationError, InvalidCredentials
from connectors.models import ProviderConfig
from connectors.registry import LOCAL_PROVIDER_ID, REGISTRY

PROJECT_ID_PARAM = OpenApiParameter(
    "projectId", int, OpenApiParameter.QUERY, required=True, description="The project."
)
WRITE_ERRORS = {code: ERROR_RESPONSES[code] for code in (400, 401, 403, 404)}


def registered_adapter(provider_id: str) -> type[ProviderAdapter]:
    """The adapter class, or 404 ``unknown_provider``."""
    cls = REGISTRY.get(provider_id)
    if cls is None:
        raise ApiError(
            status.HTTP_404_NOT_FOUND,
            "unknown_provider",
            f"No provider {provider_id!r} is registered.",
        )
    return cls


def project_from(request: Request, data, action: Action) -> Project:
    """The caller's project named by ``data["projectId"]`` (query or body):
    400 when missing, 404 outside their projects, 403 below ``action``."""
    ref = ProjectRefSerializer(data=data)
    ref.is_valid(raise_exception=True)
    return get_project_for(request.user, ref.validated_data["projectId"], action)


def provider_entry(cls: type[ProviderAdapter], project: Project, request=None) -> dict:
    config = (
        ProviderConfig.objects.filter(project=project, provider_id=cls.provider_id)
        .select_related("credential")
        .first()
    )
    return provider_view(cls, config, services.effective_default_provider_id(project), request)


class ProviderListView(APIView):
    """``GET providers?projectId=``: every registered provider, ``local`` first,
    with capabilities, config state, health and masked credential status."""

    @extend_schema(
        parameters=[PROJECT_ID_PARAM],
        responses={200: ProviderSerializer(many=True), **WRITE_ERRORS},
        summary="List providers",
    )
    def get(self, request: Request) -> Response:
        project = project_from(request, request.query_params, Action.READ)
        configs = {
            c.provider_id: c
            for c in ProviderConfig.objects.filter(project=project).select_related("credential")
        }
        default_id = services.effective_default_provider_id(project)
        ordered = sorted(REGISTRY.values(), key=lambda cls: cls.provider_id != LOCAL_PROVIDER_ID)
        return Response(
            [
                provider_view(cls, configs.get(cls.provider_id), default_id, request)
                for cls in ordered
            ]
        )


class ProviderConfigView(APIView):
    """``PUT providers/{providerId}/config`` (project admin).

    Body: ``projectId``, ``enabled``, ``isDefault``, ``allowFallbackToLocal``,
    ``rolloutPercent`` (0-100), ``settings``; an omitted field keeps its stored
    value. ``settings`` are validated by the provider's adapter and stored
    cleaned (defaults filled); errors answer 400 ``invalid_config`` under
    ``error.fields.settings``. ``isDefault: true`` makes this the project's
    only default provider. The local executor is always enabled. Answers the
    provider as ``GET providers`` shows it.
    """

    @extend_schema(
        request=ProviderConfigBodySerializer,
        responses={200: ProviderSerializer, **WRITE_ERRORS},
        summary="Configure a provider",
    )
    def put(self, request: Request, provider_id: str) -> Response:
        cls = registered_adapter(provider_id)
        project = project_from(request, request.data, Action.MANAGE_PROVIDERS)
        body = ProviderConfigBodySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        try:
            services.update_config(
                project,
                provider_id,
                actor=request.user.get_username(),
                enabled=data.get("enabled"),
                is_default=data.get("isDefault"),
                allow_fallback_to_local=data.get("allowFallbackToLocal"),
                rollout_percent=data.get("rolloutPercent"),
                settings=data.get("settings"),
                credentials=data.get("credentials"),
                user=request.user,
            )
        except InvalidCredentials as exc:
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                "invalid_credentials",
                exc.message,
                {"credentials": exc.field_errors},
            ) from None
        except ConfigurationError as exc:
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                getattr(exc, "code", "invalid_config"),
                exc.message,
                {"settings": exc.field_errors},
            ) from None
        return Response(provider_entry(cls, project, request))


class ProviderCredentialsView(APIView):
    """``POST providers/{providerId}/credentials`` (project admin), write-only.

    Body: ``projectId``, ``credentials`` (``{secretField: value}``). A present
    key replaces the stored value, an empty string clears it, an absent key is
    kept. Values are checked by the adapter (400 ``invalid_credentials`` under
    ``error.fields.credentials``), encrypted at rest, and never answered: the
    answer is the masked status (set / not set, last characters, when).
    """

    @extend_schema(
        request=ProviderCredentialsBodySerializer,
        responses={200: MaskedCredentialsSerializer, **WRITE_ERRORS},
        summary="Set provider credentials",
    )
    def post(self, request: Request, provider_id: str) -> Response:
        registered_adapter(provider_id)
        project = project_from(request, request.data, Action.MANAGE_PROVIDERS)
        body = ProviderCredentialsBodySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            masked = services.write_credentials(
                project, provider_id, body.validated_data["credentials"], user=request.user
            )
        except ConfigurationError as exc:
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                "invalid_credentials",
                exc.message,
                {"credentials": exc.field_errors},
            ) from None
        return Response(masked)


class ProviderCheckView(APIView):
    """``POST providers/{providerId}/check`` (project admin: it sends the stored
    credentials to the configured endpoint): call the
    provider with the stored settings and credentials, store and answer the
    health (``status`` healthy|failing, ``checkedAt``, ``message`` scrubbed of
    credential values). A failing provider is a 200 with ``status: failing``."""

    @extend_schema(
        request=ProjectRefSerializer,
        responses={200: HealthSerializer, **WRITE_ERRORS},
        summary="Check a provider's configuration and credentials",
    )
    def post(self, request: Request, provider_id: str) -> Response:
        registered_adapter(provider_id)
        project = project_from(request, request.data, Action.MANAGE_PROVIDERS)
        config = services.get_or_create_config(project, provider_id)
        return Response(services.check_health(config, actor=request.user.get_username()))
