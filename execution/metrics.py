"""Prometheus metrics (issue 5). Placeholder until the reconciler lands."""

from __future__ import annotations

from django.http import HttpResponse


def metrics_view(request):
    return HttpResponse("", content_type="text/plain; version=0.0.4")
