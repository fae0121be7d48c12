from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from connectors import webhooks
from execution.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    # Before the API: deliveries authenticate by signature, not by token.
    path(
        "api/webhooks/<str:source>/<str:webhook_id>",
        webhooks.receive,
        name="provider-webhook",
    ),
    path("api/", include("ccdash.api.urls")),
    path("api/execution/", include("connectors.api.urls")),
    path("api/execution/", include("execution.api.urls")),
    path("metrics", metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("", include("execution.web.urls")),
]
