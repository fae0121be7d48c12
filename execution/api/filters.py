"""Query-string filters of ``GET runs`` (camelCase names, spec §5).

``status`` and ``syncStatus`` may repeat (``?status=queued&status=running``)
to match any of the values; an unknown value answers 400 with the parameter
in ``error.fields``. Filters narrow the caller's projects, never widen them:
``projectId`` of a foreign project yields an empty page, not a 404.
"""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import Q
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from execution.models import Run
from execution.states import RunStatus, SyncStatus


@extend_schema_field(OpenApiTypes.INT)
class IntegerFilter(django_filters.NumberFilter):
    """An id: ``?projectId=1.5`` is a 400, not a decimal lookup."""

    field_class = forms.IntegerField


@extend_schema_field(OpenApiTypes.BOOL)
class FlagFilter(django_filters.BooleanFilter):
    """A switch: ``true``/``1`` turns it on; ``false``/``0`` or absent is off."""

    field_class = forms.BooleanField


# The largest id a database row can have (a signed 64-bit integer): a larger
# ?projectId= is a 400, not an overflow in the database driver.
MAX_ID = 2**63 - 1


class RunFilter(django_filters.FilterSet):
    projectId = IntegerFilter(field_name="project_id", min_value=1, max_value=MAX_ID)
    featureId = django_filters.CharFilter(field_name="feature_id")
    providerId = django_filters.CharFilter(field_name="provider_id")
    # distinct=False: a filter on the run's own column cannot repeat a row, and
    # DISTINCT makes the count read every matching row instead of its index.
    status = django_filters.MultipleChoiceFilter(
        field_name="status", choices=RunStatus.choices, distinct=False
    )
    syncStatus = django_filters.MultipleChoiceFilter(
        field_name="sync_status", choices=SyncStatus.choices, distinct=False
    )

    beforeId = IntegerFilter(
        field_name="id",
        lookup_expr="lt",
        min_value=1,
        max_value=MAX_ID,
        help_text="Keyset paging: only runs older than this id (stable under new runs).",
    )
    q = django_filters.CharFilter(
        method="filter_text", help_text="Case-insensitive text in the command or prompt."
    )
    mine = FlagFilter(method="filter_mine", help_text="Only runs I created.")
    awaitingMyApproval = FlagFilter(
        method="filter_awaiting_my_approval",
        help_text="Runs awaiting approval in projects where I approve, not created by me.",
    )

    class Meta:
        model = Run
        fields: list[str] = []

    def filter_text(self, queryset, name: str, value: str):
        value = value.strip()
        if not value:
            return queryset
        # A prompt run keeps its text in prompt, a command run in command.
        return queryset.filter(Q(command__icontains=value) | Q(prompt__icontains=value))

    def filter_mine(self, queryset, name: str, value: bool | None):
        if not value:
            return queryset
        return queryset.filter(created_by_id=self.request.user.pk)

    def filter_awaiting_my_approval(self, queryset, name: str, value: bool | None):
        if not value:
            return queryset
        return awaiting_approval_by(queryset, self.request.user)


def approver_project_ids(user):
    """Ids of the projects where ``user`` may approve (approver or admin)."""
    from ccdash.models import Membership
    from ccdash.roles import Role

    return Membership.objects.filter(user=user, role__in=[Role.APPROVER, Role.ADMIN]).values(
        "project_id"
    )


def awaiting_approval_by(queryset, user):
    """Runs waiting for an approver that ``user`` could approve: in a project
    where they approve, and not their own (a second person approves a run)."""
    return queryset.filter(
        status=RunStatus.AWAITING_APPROVAL, project_id__in=approver_project_ids(user)
    ).exclude(created_by_id=user.pk)
