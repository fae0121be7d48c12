"""The workbench page: one template and a script that talk to the DRF API
with the session cookie (log in through the admin)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie


@login_required
@ensure_csrf_cookie
def workbench(request):
    return render(request, "execution/workbench.html")
