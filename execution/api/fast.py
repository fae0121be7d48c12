"""A faster ``to_representation`` for read-only model serializers that list
many rows (the run list answers 50-500 runs per request).

DRF renders each field through several method calls per row; for a run's
~35 plain fields that was most of a list request's time at 100,000 runs.
``FastRepresentationMixin`` plans once per serializer class which fields are
plain (a model attribute, possibly dotted, rendered as str, int, bool, an ISO
datetime or a list of str) and renders those directly, with DRF's exact
output; every other field (method fields, nested serializers, custom
formats) still goes through DRF. ``tests/api/test_fast_representation.py``
checks the output is identical to DRF's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import timezone
from rest_framework import ISO_8601, serializers
from rest_framework.settings import api_settings

Render = Callable[[Any], Any]


def _iso(value) -> str:
    text = timezone.localtime(value).isoformat() if timezone.is_aware(value) else value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _str_list(value) -> list[str]:
    return [str(item) for item in value]


def _converter(field: serializers.Field) -> Render | None:
    """How to render a plain value of ``field`` exactly as DRF does, or None."""
    if isinstance(field, serializers.DateTimeField):
        fmt = getattr(field, "format", api_settings.DATETIME_FORMAT)
        return _iso if fmt == ISO_8601 and getattr(field, "timezone", None) is None else None
    if isinstance(field, serializers.BooleanField):
        return bool
    if isinstance(field, serializers.IntegerField):
        return int
    if isinstance(field, serializers.ChoiceField):
        # DRF answers the choice's own value for a known choice.
        return lambda value: field.choice_strings_to_values.get(str(value), value)
    if isinstance(field, serializers.CharField):
        return str
    if isinstance(field, serializers.ListField) and type(field.child) is serializers.CharField:
        return _str_list
    return None


def _getter(source_attrs: list[str]) -> Callable[[Any], Any]:
    if len(source_attrs) == 1:
        name = source_attrs[0]
        return lambda instance: getattr(instance, name)

    def get(instance):
        for name in source_attrs:
            if instance is None:
                return None
            instance = getattr(instance, name)
        return instance

    return get


class FastRepresentationMixin:
    """Mix into a read-only ``ModelSerializer`` whose fields are mostly plain.

    The plan is made once per serializer class (building a ModelSerializer's
    fields costs more than rendering 50 rows): a plain field becomes a getter
    and a converter, a ``SerializerMethodField`` the name of the method to call
    on this serializer, and anything else is rendered by this instance's own
    DRF field, so ``context`` still reaches every field that reads it.
    """

    _fast_plans: dict[type, list[tuple]] = {}

    @classmethod
    def _fast_plan(cls, fields) -> list[tuple]:
        plan: list[tuple] = []
        for name, field in fields.items():
            if field.write_only:
                continue
            if isinstance(field, serializers.SerializerMethodField):
                plan.append((name, None, None, field.method_name))
                continue
            convert = _converter(field) if field.source != "*" else None
            if convert is None:
                plan.append((name, None, None, None))
            else:
                plan.append((name, _getter(field.source_attrs), convert, None))
        return plan

    def to_representation(self, instance) -> dict[str, Any]:
        plan = FastRepresentationMixin._fast_plans.get(type(self))
        if plan is None:
            plan = FastRepresentationMixin._fast_plans[type(self)] = self._fast_plan(self.fields)
        out: dict[str, Any] = {}
        for name, get, convert, method in plan:
            if get is not None:
                value = get(instance)
                out[name] = None if value is None else convert(value)
            elif method is not None:
                out[name] = getattr(self, method)(instance)
            else:
                field = self.fields[name]
                attribute = field.get_attribute(instance)
                out[name] = None if attribute is None else field.to_representation(attribute)
        return out
