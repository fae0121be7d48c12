"""Contract tests: every exchange between our adapters and the simulators is
checked against JSON Schemas transcribed from the providers' descriptions
(``schemas/``). The adapter suites run under the same recorder (the autouse
``contract`` fixture of ``tests/providers``); here each provider goes through
every operation we use, and the recorder is shown to catch what it must."""

from __future__ import annotations

import time
import uuid

import jsonschema
import pytest

from connectors.base import RunRef, RunSpec, Secrets
from connectors.providers.devin.adapter import DevinAdapter
from connectors.providers.devin.simulator import DevinSimulator
from connectors.providers.github_actions.simulator import GitHubActionsSimulator
from connectors.registry import REGISTRY
from tests.contracts.recorder import ContractRecorder, iter_schemas, operations


def make_adapter(provider_id: str, sim):
    cls = REGISTRY[provider_id]
    settings = cls.validate_config({**sim.demo_settings, "baseUrl": sim.url})
    return cls(settings, Secrets(sim.demo_credentials()))


def spec(command: str = "echo contract [sim:hold]") -> RunSpec:
    return RunSpec(
        run_id=1,
        dispatch_key=uuid.uuid4().hex,
        command=command,
        project_id=1,
        created_at=time.time(),
    )


def ref_of(result, run_spec: RunSpec) -> RunRef:
    return RunRef(1, result.provider_run_id, run_spec.dispatch_key, dict(result.provider_state))


@pytest.fixture
def recorder(monkeypatch) -> ContractRecorder:
    return ContractRecorder().install(monkeypatch)


def provider_operations(provider_id: str) -> set[str]:
    return {op.name for op in operations() if op.provider_id == provider_id}


def test_the_transcribed_schemas_are_valid_json_schema():
    for _provider_id, document in iter_schemas():
        for schema in [*document["definitions"].values(), document["error"]]:
            jsonschema.Draft7Validator.check_schema(schema)
        for op in document["operations"]:
            for schema in [op.get("request"), op.get("query"), *op["responses"].values()]:
                if schema is not None:
                    jsonschema.Draft7Validator.check_schema(schema)


def test_github_every_operation_we_use_keeps_the_contract(github_sim, recorder):
    adapter = make_adapter("github_actions", github_sim)
    assert adapter.check_health().ok
    run_spec = spec()
    result = adapter.dispatch(run_spec)  # 200 with run details
    ref = ref_of(result, run_spec)
    github_sim.set_state(ref.provider_run_id, "in_progress")
    adapter.poll_status(ref)
    assert adapter.fetch_logs(ref, {}).entries
    adapter.cancel(ref)
    github_sim.configure(ignore_run_details=True)
    adapter.dispatch(spec())  # 204, then found by listing runs

    assert recorder.violations == []
    assert recorder.operations_seen() == provider_operations("github_actions")


def test_cursor_every_operation_we_use_keeps_the_contract(cursor_sim, recorder):
    adapter = make_adapter("cursor", cursor_sim)
    assert adapter.check_health().ok
    run_spec = spec()
    result = adapter.dispatch(run_spec)
    ref = ref_of(result, run_spec)
    assert adapter.recover_dispatch(run_spec) is not None  # list + full agent
    cursor_sim.set_state(ref.provider_run_id, "FINISHED")
    adapter.poll_status(ref)
    adapter.fetch_logs(ref, {})
    follow_up = adapter.follow_up(ref, "And the docs [sim:hold]")
    adapter.cancel(RunRef(1, follow_up.provider_run_id, "", dict(follow_up.provider_state)))

    assert recorder.violations == []
    assert recorder.operations_seen() == provider_operations("cursor")


def test_devin_every_operation_we_use_keeps_the_contract(devin_sim, recorder):
    adapter = make_adapter("devin", devin_sim)
    assert adapter.check_health().ok
    run_spec = spec()
    result = adapter.dispatch(run_spec)
    ref = ref_of(result, run_spec)
    assert adapter.recover_dispatch(run_spec) is not None
    devin_sim.set_state(ref.provider_run_id, "finished")
    adapter.poll_status(ref)
    assert adapter.poll_many([ref])[ref.run_id].status == "succeeded"  # the tagged listing
    assert adapter.fetch_logs(ref, {}).entries
    adapter.follow_up(ref, "Now the changelog [sim:hold]")
    adapter.cancel(ref)

    assert recorder.violations == []
    assert recorder.operations_seen() == provider_operations("devin")


def test_an_adapter_reading_a_field_the_schema_lacks_is_a_violation(
    devin_sim, recorder, monkeypatch
):
    adapter = make_adapter("devin", devin_sim)
    run_spec = spec()
    ref = ref_of(adapter.dispatch(run_spec), run_spec)
    # The mistake this catches: session objects have no url (the create answer has).
    monkeypatch.setattr(
        DevinAdapter, "session_url", lambda self, sid: str(self._session(sid).get("url") or "")
    )

    adapter.poll_status(ref)

    assert any(".url, which the schema does not declare" in v for v in recorder.violations)


def test_a_query_parameter_the_description_lacks_is_a_violation(devin_sim, recorder):
    adapter = make_adapter("devin", devin_sim)

    adapter.send("GET", "/v1/sessions", params={"tags": "ccdash", "per_page": 100})
    adapter.send("GET", "/v1/sessions", params={"limit": "many"})

    assert any("query: (root): Additional properties" in v for v in recorder.violations)
    assert any("query: limit/0: 'many' does not match" in v for v in recorder.violations)


def test_a_listed_session_without_a_required_field_is_a_violation(devin_sim, recorder, monkeypatch):
    original = DevinSimulator._session_json

    def without_updated_at(self, session):
        answer = original(self, session)
        del answer["updated_at"]
        return answer

    monkeypatch.setattr(DevinSimulator, "_session_json", without_updated_at)
    adapter = make_adapter("devin", devin_sim)
    run_spec = spec()
    ref = ref_of(adapter.dispatch(run_spec), run_spec)

    adapter.poll_many([ref])

    assert any(
        "GET /v1/sessions 200: sessions/0: 'updated_at' is a required property" in v
        for v in recorder.violations
    )


def test_a_simulated_run_without_a_required_field_is_a_violation(github_sim, recorder, monkeypatch):
    original = GitHubActionsSimulator._run_json

    def without_node_id(self, run):
        answer = original(self, run)
        del answer["node_id"]
        return answer

    monkeypatch.setattr(GitHubActionsSimulator, "_run_json", without_node_id)
    adapter = make_adapter("github_actions", github_sim)
    run_spec = spec()
    adapter.poll_status(ref_of(adapter.dispatch(run_spec), run_spec))

    assert any("'node_id' is a required property" in v for v in recorder.violations)


def test_a_request_body_outside_the_schema_is_a_violation(github_sim, recorder):
    adapter = make_adapter("github_actions", github_sim)
    inputs = {f"input{n}": "x" for n in range(26)}
    path = "/repos/ccdash/demo/actions/workflows/agent.yml/dispatches"

    adapter.send("POST", path, json={"ref": "main", "inputs": inputs})

    assert any("request: inputs" in v for v in recorder.violations)


def test_a_run_repository_owner_without_a_required_field_is_a_violation(
    github_sim, recorder, monkeypatch
):
    # The nested objects carry the official required lists too: a run's
    # repository owner (simple-user) without its avatar_url breaks the contract.
    original = GitHubActionsSimulator._user_json

    def without_avatar(self, login):
        answer = original(self, login)
        del answer["avatar_url"]
        return answer

    monkeypatch.setattr(GitHubActionsSimulator, "_user_json", without_avatar)
    adapter = make_adapter("github_actions", github_sim)
    run_spec = spec()
    adapter.poll_status(ref_of(adapter.dispatch(run_spec), run_spec))

    assert any(
        "repository/owner: 'avatar_url' is a required property" in v for v in recorder.violations
    )


def test_the_github_repository_objects_carry_the_official_required_lists():
    # Transcribed from components/schemas in github/rest-api-description
    # (API version 2022-11-28): the counts guard against a partial transcription.
    definitions = dict(iter_schemas())["github_actions"]["definitions"]
    counts = {name: len(schema.get("required", [])) for name, schema in definitions.items()}

    assert counts["minimal-repository"] == 46
    assert counts["full-repository"] == 75
    assert counts["simple-user"] == 18
    assert counts["workflow"] == 10
    assert counts["content-file"] == 12
    assert counts["workflow-run"] == 26
    assert counts["job"] == 21
