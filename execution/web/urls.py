from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from execution.web import views

urlpatterns = [
    path("", views.runs_page, name="workbench"),
    path("runs/<int:run_id>", views.run_page, name="run-page"),
    path("projects/<int:project_id>/settings", views.settings_page, name="project-settings"),
    path(
        "login/",
        auth_views.LoginView.as_view(template_name="execution/login.html"),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("favicon.ico", views.favicon),
]
