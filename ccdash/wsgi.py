"""WSGI entry point. Refuses to serve with public secrets and DEBUG off
(``ccdash.checks``): servers import this without running the system checks."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ccdash.settings")
application = get_wsgi_application()

from ccdash.checks import refuse_unsafe_start  # noqa: E402  (needs configured settings)

refuse_unsafe_start()
