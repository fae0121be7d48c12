"""Fixtures of the page specs: the API specs' second project (B)."""

from __future__ import annotations

from tests.api.conftest import other_project, other_run  # noqa: F401
