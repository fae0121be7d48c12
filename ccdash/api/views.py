"""Core API views: the auth token, projects and their members (spec §5, "Around them").

Scoping and roles follow ``ccdash.api.permissions``: a project the caller is
not a member of answers 404, a role that does not allow the action 403.
"""

from __future__ import annotations

from django.contrib.auth import authenticate, get_user_model
from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema
from knox.models import AuthToken
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ccdash.api.auth import LoginRateThrottle, TokenAuthentication
from ccdash.api.errors import ApiError, Conflict
from ccdash.api.permissions import get_project_for, scoped_projects
from ccdash.api.schema import ERROR_RESPONSES
from ccdash.api.serializers import (
    MemberRemoveSerializer,
    MemberSerializer,
    ProjectSerializer,
    ProjectSettingsSerializer,
    TokenRequestSerializer,
    TokenSerializer,
)
from ccdash.models import Membership, Project, record_audit
from ccdash.project_settings import EDITABLE_SETTINGS, READ_ONLY_SETTINGS, update_settings
from ccdash.roles import Action, Role


class ObtainTokenView(APIView):
    """``POST /api/auth/token/``: exchange a username and password for a new
    API token and its expiry (``API_TOKEN_TTL_HOURS`` from now).

    Send it as ``Authorization: Token <token>``. Only its digest is stored, so
    it is shown once. Wrong or inactive credentials answer 400 with code
    ``invalid_credentials``; a missing field 400 ``invalid``; more attempts
    than ``API_LOGIN_RATE`` from one address 429 ``throttled``.
    """

    # No authentication: a stale session cookie must not make this CSRF-checked.
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginRateThrottle]

    @extend_schema(
        request=TokenRequestSerializer,
        responses={
            200: TokenSerializer,
            400: ERROR_RESPONSES[400],
            429: ERROR_RESPONSES[429],
        },
        auth=[],
        summary="Obtain an API token",
    )
    def post(self, request: Request) -> Response:
        body = TokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user = authenticate(
            request=request._request,
            username=body.validated_data["username"],
            password=body.validated_data["password"],
        )
        if user is None:
            # One message for unknown user and wrong password: no user enumeration.
            raise ApiError(
                status.HTTP_400_BAD_REQUEST,
                "invalid_credentials",
                "Unable to log in with the provided credentials.",
            )
        instance, token = AuthToken.objects.create(user=user)
        return Response({"token": token, "expiry": instance.expiry})


class LogoutView(APIView):
    """``POST /api/auth/logout/``: revoke the token this request carries
    (other logins of the same user keep theirs). 204; 401 without a token."""

    authentication_classes = [TokenAuthentication]

    @extend_schema(
        request=None,
        responses={204: None, 401: ERROR_RESPONSES[401]},
        summary="Revoke the API token of this request",
    )
    def post(self, request: Request) -> Response:
        if isinstance(request.auth, AuthToken):
            request.auth.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProjectListView(APIView):
    """``GET /api/projects/``: the caller's projects (not paginated: a user is a
    member of a handful). ``POST``: create one; the creator becomes its admin.

    Creating a project needs the ``ccdash.add_project`` permission (superusers
    have it; operators grant it to staff through a group): a project's admin
    chooses the workspace local runs touch, so this is the platform
    operator's decision, not self-service. Without it: 403
    ``permission_denied``. ``workspaceRoot`` must be inside
    ``EXECUTION_WORKSPACES_ROOT`` (``ccdash.workspaces``), else 400.
    """

    CREATE_PERMISSION = "ccdash.add_project"

    @extend_schema(responses={200: ProjectSerializer(many=True)}, summary="List my projects")
    def get(self, request: Request) -> Response:
        projects = scoped_projects(request.user).order_by("id")
        return Response(ProjectSerializer(projects, many=True).data)

    @extend_schema(
        request=ProjectSerializer,
        responses={201: ProjectSerializer, **{c: ERROR_RESPONSES[c] for c in (400, 401, 403)}},
        summary="Create a project (needs the ccdash.add_project permission)",
    )
    def post(self, request: Request) -> Response:
        if not request.user.has_perm(self.CREATE_PERMISSION):
            raise ApiError(
                status.HTTP_403_FORBIDDEN,
                "permission_denied",
                "Creating a project needs the ccdash.add_project permission; "
                "ask a platform operator.",
            )
        body = ProjectSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        actor = request.user.get_username()
        with transaction.atomic():
            project = body.save()
            Membership.objects.create(project=project, user=request.user, role=Role.ADMIN)
            record_audit(
                project,
                actor,
                "project_created",
                f"Project {project.name!r} created by {actor}, who became its admin.",
                workspaceRoot=project.workspace_root,
            )
        project.caller_role = Role.ADMIN.value
        return Response(ProjectSerializer(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailView(APIView):
    """``GET /api/projects/{id}/``: one of the caller's projects (else 404).
    ``PATCH``: change its settings (project admin)."""

    @extend_schema(
        responses={200: ProjectSerializer, 404: ERROR_RESPONSES[404]}, summary="Get a project"
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(ProjectSerializer(get_project_for(request.user, pk)).data)

    @extend_schema(
        request=ProjectSettingsSerializer,
        responses={
            200: ProjectSerializer,
            **{code: ERROR_RESPONSES[code] for code in (400, 403, 404)},
        },
        summary="Change project settings",
    )
    def patch(self, request: Request, pk: int) -> Response:
        """Project admin. Send any of ``name``, ``defaultProviderId``,
        ``allowFallbackToLocal``, ``allowSelfApproval``,
        ``agentRunsRequireApproval``, ``promptPatterns``, ``maxPromptLength``,
        ``agentFallbackChain``; the others keep their values. An unknown or
        read-only field (``workspaceRoot``) is a 400 naming it. Each change is
        written to the project's audit log with its old and new value."""
        project = get_project_for(request.user, pk, Action.MANAGE_PROJECT)
        if not isinstance(request.data, dict):
            raise ApiError(status.HTTP_400_BAD_REQUEST, "invalid", "Send a JSON object.")
        unknown = {
            name: [READ_ONLY_SETTINGS.get(name, "Unknown field.")]
            for name in request.data
            if name not in EDITABLE_SETTINGS
        }
        if unknown:
            raise ApiError(status.HTTP_400_BAD_REQUEST, "invalid", "Invalid input.", unknown)
        body = ProjectSettingsSerializer(data=request.data, partial=True)
        body.is_valid(raise_exception=True)
        update_settings(project, request.user.get_username(), dict(body.validated_data))
        return Response(ProjectSerializer(project).data)


class ProjectMembersView(APIView):
    """``/api/projects/{id}/members``: list (any member), add or change a role
    (``POST``, admin), remove (``DELETE``, admin; body ``{"username"}`` or
    ``?username=``).

    Errors: 404 outside the caller's projects; 403 below admin; 400 for an
    unknown username (field ``username``) or a bad role; 409 ``last_admin`` when
    the change would leave the project without an admin. Every change is
    written to the project's audit log.
    """

    @extend_schema(
        responses={200: MemberSerializer(many=True), 404: ERROR_RESPONSES[404]},
        summary="List project members",
    )
    def get(self, request: Request, pk: int) -> Response:
        project = get_project_for(request.user, pk, Action.READ)
        members = project.memberships.select_related("user").order_by("user__username")
        return Response([{"username": m.user.get_username(), "role": m.role} for m in members])

    @extend_schema(
        request=MemberSerializer,
        responses={
            200: MemberSerializer,
            201: MemberSerializer,
            **{code: ERROR_RESPONSES[code] for code in (400, 403, 404, 409)},
        },
        summary="Add a member or change their role",
    )
    def post(self, request: Request, pk: int) -> Response:
        project = get_project_for(request.user, pk, Action.MANAGE_MEMBERS)
        body = MemberSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        user = _existing_user(body.validated_data["username"])
        role = body.validated_data["role"]
        actor = request.user.get_username()
        with transaction.atomic():
            membership = (
                Membership.objects.select_for_update().filter(project=project, user=user).first()
            )
            if membership is None:
                Membership.objects.create(project=project, user=user, role=role)
                record_audit(
                    project,
                    actor,
                    "member_added",
                    f"{user.get_username()} added as {role} by {actor}.",
                    username=user.get_username(),
                    role=role,
                )
                answer = status.HTTP_201_CREATED
            else:
                previous = membership.role
                if previous == Role.ADMIN and role != Role.ADMIN:
                    _ensure_another_admin(project, user)
                membership.role = role
                membership.save(update_fields=["role"])
                record_audit(
                    project,
                    actor,
                    "member_role_changed",
                    f"{user.get_username()}: {previous} → {role} by {actor}.",
                    username=user.get_username(),
                    role=role,
                    previousRole=previous,
                )
                answer = status.HTTP_200_OK
        return Response({"username": user.get_username(), "role": role}, status=answer)

    @extend_schema(
        request=MemberRemoveSerializer,
        parameters=[
            OpenApiParameter(
                "username",
                str,
                description="Instead of the body, for clients that cannot send one.",
            )
        ],
        responses={204: None, **{code: ERROR_RESPONSES[code] for code in (400, 403, 404, 409)}},
        summary="Remove a member",
    )
    def delete(self, request: Request, pk: int) -> Response:
        project = get_project_for(request.user, pk, Action.MANAGE_MEMBERS)
        # Some HTTP clients and proxies drop DELETE bodies: ?username= works too.
        body = MemberRemoveSerializer(data=request.data or request.query_params)
        body.is_valid(raise_exception=True)
        user = _existing_user(body.validated_data["username"])
        actor = request.user.get_username()
        with transaction.atomic():
            membership = (
                Membership.objects.select_for_update().filter(project=project, user=user).first()
            )
            if membership is None:
                raise ApiError(
                    status.HTTP_400_BAD_REQUEST,
                    "invalid",
                    "Invalid input.",
                    {"username": ["Not a member of this project."]},
                )
            if membership.role == Role.ADMIN:
                _ensure_another_admin(project, user)
            membership.delete()
            record_audit(
                project,
                actor,
                "member_removed",
                f"{user.get_username()} ({membership.role}) removed by {actor}.",
                username=user.get_username(),
                role=membership.role,
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


def _existing_user(username: str):
    try:
        return get_user_model().objects.get_by_natural_key(username)
    except get_user_model().DoesNotExist:
        raise ApiError(
            status.HTTP_400_BAD_REQUEST,
            "invalid",
            "Invalid input.",
            {"username": ["Unknown user."]},
        ) from None


def _ensure_another_admin(project: Project, leaving) -> None:
    """A project keeps at least one admin, or nobody could manage it again."""
    others = (
        Membership.objects.select_for_update()
        .filter(project=project, role=Role.ADMIN)
        .exclude(user=leaving)
    )
    if not others.exists():
        raise Conflict("A project needs at least one admin; add another first.", "last_admin")
