"""Who may see and do what, for every API view.

Two rules, applied in this order:

1. Scope: an object outside the caller's projects does not exist for them
   (404, never 403), so the API never confirms that another project's run or
   project id exists.
2. Role: inside one of the caller's projects, an action their role does not
   allow (``ccdash.roles``) answers 403 with code ``permission_denied``.

The caller's role is fetched in the same query as the object (a correlated
subquery annotated as ``caller_role``), so a scoped lookup plus its role check
costs one query.
"""

from __future__ import annotations

from django.db.models import OuterRef, QuerySet, Subquery
from rest_framework import status

from ccdash.api.errors import ApiError
from ccdash.models import Membership, Project
from ccdash.roles import MINIMUM_ROLE, Action, role_allows


class NotFound(ApiError):
    """404 with the standard body; used for anything outside the caller's projects."""

    def __init__(self, what: str = "Not found."):
        super().__init__(status.HTTP_404_NOT_FOUND, "not_found", what)


def caller_role(user, project_ref: str = "pk") -> Subquery:
    """The caller's role in the project ``project_ref`` points at (NULL when none)."""
    return Subquery(
        Membership.objects.filter(project=OuterRef(project_ref), user=user).values("role")[:1]
    )


def member_project_ids(user) -> QuerySet:
    """Subquery of the ids of the caller's projects (empty for anonymous)."""
    if not getattr(user, "is_authenticated", False):
        return Membership.objects.none().values("project_id")
    return Membership.objects.filter(user=user).values("project_id")


def scoped_projects(user) -> QuerySet[Project]:
    """The caller's projects, each annotated with ``caller_role``."""
    return Project.objects.for_user(user).annotate(caller_role=caller_role(user))


def require_role(role: str | None, action: Action) -> None:
    """Raise 403 ``permission_denied`` unless ``role`` allows ``action``.

    Callers have already scoped the object to the caller's projects, so a
    ``None`` role here cannot happen through the API; it is denied anyway.
    """
    if not role_allows(role, action):
        needed = MINIMUM_ROLE[action].value
        raise ApiError(
            status.HTTP_403_FORBIDDEN,
            "permission_denied",
            f"Your role in this project ({role or 'none'}) does not allow {action.value}; "
            f"it needs {needed} or above.",
        )


def get_project_for(user, project_id: int | str, action: Action = Action.READ) -> Project:
    """One of the caller's projects, checked for ``action``.

    Raises ``NotFound`` (404) when the project does not exist or the caller is
    not a member, ``ApiError`` 403 when their role does not allow ``action``.
    """
    try:
        project = scoped_projects(user).get(pk=int(project_id))
    except (Project.DoesNotExist, TypeError, ValueError):
        raise NotFound("Project not found.") from None
    require_role(project.caller_role, action)
    return project
