"""Routes under ``/api/execution/`` for policy and runs (spec §5: no trailing slash)."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from execution.api.views import PolicyCheckView, RunViewSet

router = SimpleRouter(trailing_slash=False)
router.register("runs", RunViewSet, basename="run")

urlpatterns = [
    path("policy-check", PolicyCheckView.as_view(), name="policy-check"),
    *router.urls,
]
