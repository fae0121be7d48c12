from __future__ import annotations

from django.urls import path

from execution.web.views import workbench

urlpatterns = [path("", workbench, name="workbench")]
