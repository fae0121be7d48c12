"""A simulated provider's run link opens a page for people (the demo's
"open in provider" links), not an API error."""

from __future__ import annotations

import pytest
import requests

from connectors.simulators import simulator_classes
from tests.conftest import client_for

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("provider_id", list(simulator_classes()))
def test_a_run_link_opens_a_readable_page(
    provider_id, project, admin_member, operator, sim_for, django_capture_on_commit_callbacks
):
    sim = sim_for(provider_id)
    admin = client_for(admin_member)
    admin.put(
        f"/api/execution/providers/{provider_id}/config",
        {
            "projectId": project.pk,
            "enabled": True,
            "settings": {**sim.demo_settings, "baseUrl": sim.url},
        },
        format="json",
    )
    admin.post(
        f"/api/execution/providers/{provider_id}/credentials",
        {"projectId": project.pk, "credentials": sim.demo_credentials()},
        format="json",
    )
    body = {"projectId": project.pk, "providerId": provider_id}
    providers = client_for(operator).get(f"/api/execution/providers?projectId={project.pk}").json()
    input_kind = next(p for p in providers if p["id"] == provider_id).get("inputKind", "command")
    body["prompt" if input_kind == "prompt" else "command"] = "echo page [sim:hold]"
    with django_capture_on_commit_callbacks(execute=True):
        created = client_for(operator).post("/api/execution/runs", body, format="json")
    assert created.status_code == 201, created.content
    run = client_for(operator).get(f"/api/execution/runs/{created.json()['id']}").json()
    assert run["providerUrl"].startswith(sim.url)

    page = requests.get(run["providerUrl"], headers={"Accept": "text/html"}, timeout=5)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "Simulated" in page.text and "State:" in page.text

    missing = requests.get(f"{sim.url}/no/such/run", headers={"Accept": "text/html"}, timeout=5)
    assert missing.status_code == 404 and "No run" in missing.text
