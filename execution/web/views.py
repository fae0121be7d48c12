"""The workbench pages: server-rendered templates, with small scripts that
talk to the same REST API as every other client (session cookie + CSRF).

* ``/`` — runs of one project (filters, search, pages with the count) and the
  launch panel;
* ``/runs/<id>`` — one run, its actions and its live log (Server-Sent Events
  from ``GET /api/execution/runs/{id}/stream``);
* ``/projects/<id>/settings`` — providers' settings, credentials and health.

Pages read through the API's own scoping (``ccdash.api.permissions``): a run or
project outside the caller's projects is a 404 page. Fragments
(``?fragment=…``) are the parts a script swaps in when something changes.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import ensure_csrf_cookie

from ccdash.api.permissions import caller_role, member_project_ids, scoped_projects
from ccdash.roles import Action, role_allows
from connectors.api.serializers import provider_view
from connectors.models import ProviderConfig
from connectors.registry import LOCAL_PROVIDER_ID, REGISTRY
from connectors.services import effective_default_provider_id
from execution.api.filters import RunFilter, awaiting_approval_by
from execution.models import Run
from execution.states import RunStatus, SyncStatus
from execution.web.present import decisions, run_actions, run_chain

PAGE_SIZE = 50


def projects_for(request: HttpRequest) -> list:
    return list(scoped_projects(request.user))


def current_project(request: HttpRequest, projects: list, wanted: str | None):
    """The project of ``?projectId=``, else the one last used, else the first."""
    by_id = {str(p.pk): p for p in projects}
    chosen = by_id.get(wanted or "") or by_id.get(str(request.session.get("projectId", "")))
    chosen = chosen or (projects[0] if projects else None)
    if chosen is not None:
        request.session["projectId"] = chosen.pk
    return chosen


def pending_approvals(request: HttpRequest) -> int:
    """Runs the caller could approve now (shown in the header for approvers)."""
    runs = Run.objects.filter(project_id__in=member_project_ids(request.user))
    return awaiting_approval_by(runs, request.user).count()


def common(request: HttpRequest, **context: Any) -> dict[str, Any]:
    return {"pending_approvals": pending_approvals(request), **context}


def provider_choices() -> list[tuple[str, str]]:
    return [(pid, cls.label) for pid, cls in REGISTRY.items()]


@login_required
@ensure_csrf_cookie
def runs_page(request: HttpRequest) -> HttpResponse:
    projects = projects_for(request)
    project = current_project(request, projects, request.GET.get("projectId"))
    context: dict[str, Any] = {"projects": projects, "project": project}
    if project is not None:
        base = Run.objects.filter(project_id__in=member_project_ids(request.user), project=project)
        filters = RunFilter(request.GET, queryset=base, request=request)
        runs = filters.qs if filters.is_valid() else base.none()
        total = runs.count()
        try:
            page = max(1, int(request.GET.get("page", "1")))
        except ValueError:
            page = 1
        pages = max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)
        page = min(page, pages)
        offset = (page - 1) * PAGE_SIZE
        ids = runs.order_by("-id").values("id")[offset : offset + PAGE_SIZE]
        rows = list(Run.objects.filter(pk__in=ids).select_related("created_by").order_by("-id"))
        query = request.GET.copy()
        query.pop("page", None)
        query.pop("fragment", None)
        filtered = (
            any(
                request.GET.get(k) for k in ("status", "providerId", "syncStatus", "featureId", "q")
            )
            or request.GET.get("mine")
            or request.GET.get("awaitingMyApproval")
        )
        context.update(
            runs=rows,
            total=total,
            page=page,
            pages=pages,
            first=offset + 1 if rows else 0,
            last=offset + len(rows),
            query=query.urlencode(),
            filtered=bool(filtered),
            form=filters.form,
            errors=filters.form.errors if not filters.is_valid() else {},
            statuses=RunStatus.values,
            sync_statuses=SyncStatus.values,
            providers=provider_choices(),
            role=project.caller_role,
            can_launch=role_allows(project.caller_role, Action.CREATE_RUN),
        )
    if request.GET.get("fragment") == "rows":
        rendered = common(request, **context)
        response = render(request, "execution/_run_rows.html", rendered)
        # The header's counter follows the list without another request.
        response["X-Pending-Approvals"] = str(rendered["pending_approvals"])
        return response
    return render(request, "execution/runs.html", common(request, **context))


def run_for_page(request: HttpRequest, run_id: int) -> Run:
    run = (
        Run.objects.annotate(caller_role=caller_role(request.user, "project_id"))
        .filter(pk=run_id, caller_role__isnull=False)
        .select_related("project", "approved_by", "created_by", "retry_of")
        .first()
    )
    if run is None:
        raise Http404("Run not found.")
    return run


@login_required
@ensure_csrf_cookie
def run_page(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for_page(request, run_id)
    request.session["projectId"] = run.project_id
    provider_cls = REGISTRY.get(run.provider_id)
    context = common(
        request,
        run=run,
        project=run.project,
        role=run.caller_role,
        actions=run_actions(run, request.user, run.caller_role, provider_cls),
        chain=run_chain(run),
        decisions=decisions(run),
        provider_label=provider_cls.label if provider_cls else run.provider_id,
        link_ok=run.provider_url.startswith(("https://", "http://")),
    )
    if request.GET.get("fragment") == "details":
        return render(request, "execution/_run_details.html", context)
    return render(request, "execution/run.html", context)


@login_required
@ensure_csrf_cookie
def settings_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = scoped_projects(request.user).filter(pk=project_id).first()
    if project is None:
        raise Http404("Project not found.")
    request.session["projectId"] = project.pk
    configs = {
        c.provider_id: c
        for c in ProviderConfig.objects.filter(project=project).select_related("credential")
    }
    default_id = effective_default_provider_id(project)
    ordered = sorted(REGISTRY.values(), key=lambda cls: cls.provider_id != LOCAL_PROVIDER_ID)
    providers = [
        provider_view(cls, configs.get(cls.provider_id), default_id, request) for cls in ordered
    ]
    return render(
        request,
        "execution/settings.html",
        common(
            request,
            project=project,
            providers=providers,
            role=project.caller_role,
            can_manage=role_allows(project.caller_role, Action.MANAGE_PROVIDERS),
            can_check=role_allows(project.caller_role, Action.CREATE_RUN),
        ),
    )


def favicon(request: HttpRequest) -> HttpResponse:
    return redirect("/static/execution/favicon.svg", permanent=True)
