"""Routes under ``/api/``: the auth token, projects and members (spec §5)."""

from __future__ import annotations

from django.urls import path

from ccdash.api import views

urlpatterns = [
    path("auth/token/", views.ObtainTokenView.as_view(), name="api-token"),
    path("auth/logout/", views.LogoutView.as_view(), name="api-logout"),
    path("projects/", views.ProjectListView.as_view(), name="project-list"),
    path("projects/<int:pk>/", views.ProjectDetailView.as_view(), name="project-detail"),
    path("projects/<int:pk>/members", views.ProjectMembersView.as_view(), name="project-members"),
]
