"""Fixtures of the page specs: the API specs' second project (B) and the
provider simulators."""

from __future__ import annotations

from tests.api.conftest import other_project, other_run  # noqa: F401
from tests.providers.conftest import sim_for, simulator_servers  # noqa: F401
