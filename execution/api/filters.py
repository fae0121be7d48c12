"""Query-string filters of ``GET runs`` (camelCase names, spec §5).

``status`` and ``syncStatus`` may repeat (``?status=queued&status=running``)
to match any of the values; an unknown value answers 400 with the parameter
in ``error.fields``. Filters narrow the caller's projects, never widen them:
``projectId`` of a foreign project yields an empty page, not a 404.
"""

from __future__ import annotations

import django_filters
from django import forms
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field

from execution.models import Run
from execution.states import RunStatus, SyncStatus


@extend_schema_field(OpenApiTypes.INT)
class IntegerFilter(django_filters.NumberFilter):
    """An id: ``?projectId=1.5`` is a 400, not a decimal lookup."""

    field_class = forms.IntegerField


class RunFilter(django_filters.FilterSet):
    projectId = IntegerFilter(field_name="project_id")
    featureId = django_filters.CharFilter(field_name="feature_id")
    providerId = django_filters.CharFilter(field_name="provider_id")
    status = django_filters.MultipleChoiceFilter(field_name="status", choices=RunStatus.choices)
    syncStatus = django_filters.MultipleChoiceFilter(
        field_name="sync_status", choices=SyncStatus.choices
    )

    class Meta:
        model = Run
        fields: list[str] = []
