"""Provider routes, included under ``/api/execution/``."""

from __future__ import annotations

from django.urls import path

from connectors.api import views

urlpatterns = [
    path("providers", views.ProviderListView.as_view(), name="provider-list"),
    path(
        "providers/<str:provider_id>/config",
        views.ProviderConfigView.as_view(),
        name="provider-config",
    ),
    path(
        "providers/<str:provider_id>/credentials",
        views.ProviderCredentialsView.as_view(),
        name="provider-credentials",
    ),
    path(
        "providers/<str:provider_id>/check",
        views.ProviderCheckView.as_view(),
        name="provider-check",
    ),
]
