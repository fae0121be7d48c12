"""Follow-up hooks against the providers' published descriptions (not our
simulators): the exact request each sends and how each documented answer is
read.

- Devin v1 "Send a message to an existing session":
  ``POST /v1/sessions/{session_id}/message`` body ``{"message": str}``, answer
  ``MessageSentResponse {"detail": str}`` or null
  (https://docs.devin.ai/api-reference/sessions/send-a-message-to-an-existing-devin-session).
- Cursor Cloud Agents v1 follow-up: ``POST /v1/agents/{id}/runs`` body
  ``{"prompt": {"text": str}}``, ``201 {"agent", "run"}``; one active run per
  agent, else ``409 {"error": {"code": "agent_busy", "message"}}``.
"""

from __future__ import annotations

import json

import pytest
import responses

from connectors.base import RunRef, Secrets
from connectors.errors import AuthError, ProviderConflict
from connectors.registry import REGISTRY

API = "https://api.provider.test"
KEY = "follow-up-key-9f8e7d6c5b4a"


@pytest.fixture(autouse=True)
def _allow_the_test_api(settings):
    settings.CONNECTORS_ALLOWED_HOSTS = ["api.provider.test"]


def make(provider_id: str, **settings):
    cls = REGISTRY[provider_id]
    cleaned = cls.validate_config({**settings, "baseUrl": API})
    return cls(cleaned, Secrets({"apiKey": KEY}))


def devin_ref() -> RunRef:
    return RunRef(1, "devin-abc", "key", {})


def cursor_ref() -> RunRef:
    return RunRef(1, "run-1", "key", {"agentId": "bc-1", "branchName": "ccdash/key"})


@responses.activate
def test_devin_message_sends_the_documented_body():
    responses.post(f"{API}/v1/sessions/devin-abc/message", json={"detail": "Message sent"})

    make("devin").send_message(devin_ref(), "Use PostgreSQL 16.")

    (call,) = responses.calls
    assert json.loads(call.request.body) == {"message": "Use PostgreSQL 16."}
    assert call.request.headers["Authorization"] == f"Bearer {KEY}"


@responses.activate
def test_devin_message_with_a_null_answer_is_sent():
    responses.post(f"{API}/v1/sessions/devin-abc/message", body="null", status=200)

    make("devin").send_message(devin_ref(), "Go on")

    assert len(responses.calls) == 1


@responses.activate
def test_devin_refusing_a_message_is_a_conflict_without_the_key():
    responses.post(
        f"{API}/v1/sessions/devin-abc/message",
        json={"detail": f"Session has ended (key {KEY})"},
        status=400,
    )

    with pytest.raises(ProviderConflict) as raised:
        make("devin").send_message(devin_ref(), "Go on")

    assert raised.value.code == "session_ended"
    assert KEY not in raised.value.message


@responses.activate
def test_devin_rejecting_the_key_on_a_message_is_an_auth_error():
    responses.post(f"{API}/v1/sessions/devin-abc/message", json={"detail": "no"}, status=401)

    with pytest.raises(AuthError):
        make("devin").send_message(devin_ref(), "Go on")


@responses.activate
def test_devin_follow_up_on_an_expired_session_sends_nothing():
    responses.get(
        f"{API}/v1/sessions/devin-abc",
        json={"session_id": "devin-abc", "status_enum": "expired", "messages": []},
    )

    with pytest.raises(ProviderConflict) as raised:
        make("devin").follow_up(devin_ref(), "More")

    assert raised.value.code == "session_ended"
    assert [c.request.method for c in responses.calls] == ["GET"]


@responses.activate
def test_devin_follow_up_on_a_finished_session_continues_it():
    responses.get(
        f"{API}/v1/sessions/devin-abc",
        json={"session_id": "devin-abc", "status_enum": "finished", "messages": []},
    )
    responses.post(f"{API}/v1/sessions/devin-abc/message", json={"detail": "Message sent"})

    result = make("devin").follow_up(devin_ref(), "Now bump the version")

    assert result.provider_run_id == "devin-abc"
    assert json.loads(responses.calls[1].request.body) == {"message": "Now bump the version"}


@responses.activate
def test_cursor_follow_up_creates_a_run_on_the_existing_agent():
    responses.post(
        f"{API}/v1/agents/bc-1/runs",
        status=201,
        json={
            "agent": {
                "id": "bc-1",
                "url": "https://cursor.com/agents/bc-1",
                "latestRunId": "run-2",
            },
            "run": {"id": "run-2", "agentId": "bc-1", "status": "CREATING"},
        },
    )

    result = make("cursor", repository="https://github.com/o/r").follow_up(
        cursor_ref(), "Also add a FAQ"
    )

    (call,) = responses.calls
    assert json.loads(call.request.body) == {"prompt": {"text": "Also add a FAQ"}}
    assert (result.provider_run_id, result.provider_status_raw) == ("run-2", "CREATING")
    assert result.provider_state == {"agentId": "bc-1", "branchName": "ccdash/key"}
    assert result.provider_url == "https://cursor.com/agents/bc-1"


@responses.activate
def test_cursor_agent_busy_is_a_conflict_with_cursors_code():
    responses.post(
        f"{API}/v1/agents/bc-1/runs",
        status=409,
        json={"error": {"code": "agent_busy", "message": "Agent already has an active run"}},
    )

    with pytest.raises(ProviderConflict) as raised:
        make("cursor", repository="https://github.com/o/r").follow_up(cursor_ref(), "More")

    assert raised.value.code == "agent_busy"
    assert "active run" in raised.value.message
