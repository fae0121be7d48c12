"""Project roles and the actions each may take.

Roles are ordered: each includes everything the roles before it may do, so an
approver can also launch runs and an admin can do everything.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    APPROVER = "approver"
    ADMIN = "admin"


class Action(StrEnum):
    READ = "read"
    CREATE_RUN = "create_run"
    CANCEL = "cancel"
    RETRY = "retry"
    RECONCILE = "reconcile"
    APPROVE = "approve"
    MANAGE_PROVIDERS = "manage_providers"
    MANAGE_MEMBERS = "manage_members"
    MANAGE_PROJECT = "manage_project"


ROLE_ORDER = [Role.VIEWER, Role.OPERATOR, Role.APPROVER, Role.ADMIN]

# The least role that may take each action.
MINIMUM_ROLE: dict[Action, Role] = {
    Action.READ: Role.VIEWER,
    Action.CREATE_RUN: Role.OPERATOR,
    Action.CANCEL: Role.OPERATOR,
    Action.RETRY: Role.OPERATOR,
    Action.RECONCILE: Role.OPERATOR,
    Action.APPROVE: Role.APPROVER,
    Action.MANAGE_PROVIDERS: Role.ADMIN,
    Action.MANAGE_MEMBERS: Role.ADMIN,
    Action.MANAGE_PROJECT: Role.ADMIN,
}


def role_allows(role: str | None, action: Action) -> bool:
    if role is None:
        return False
    return ROLE_ORDER.index(Role(role)) >= ROLE_ORDER.index(MINIMUM_ROLE[action])
