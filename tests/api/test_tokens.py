"""API tokens: hashed at rest, expiring, revocable; the login endpoint is throttled."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from knox.models import AuthToken
from rest_framework.test import APIClient

from tests.api.helpers import error_code
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/auth/token/"
LOGOUT_URL = "/api/auth/logout/"
CREDENTIALS = {"username": "alice", "password": "pw-for-tests"}


@pytest.fixture(autouse=True)
def _fresh_throttle_counts():
    # The login throttle counts in the cache, which outlives a test.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


def login() -> dict:
    response = APIClient().post(TOKEN_URL, CREDENTIALS, format="json")
    assert response.status_code == 200, response.json()
    return response.json()


def with_token(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_the_token_is_stored_only_as_a_digest(alice):
    token = login()["token"]

    row = AuthToken.objects.get(user=alice)
    assert row.digest == hashlib.sha512(token.encode()).hexdigest()
    stored = " ".join(str(value) for value in AuthToken.objects.values_list().get())
    assert token not in stored


def test_the_token_expires_after_the_configured_lifetime(alice, settings):
    before = timezone.now()
    body = login()
    expiry = AuthToken.objects.get(user=alice).expiry

    assert timedelta(hours=9.9) < expiry - before <= timedelta(hours=10, seconds=5)
    assert body["expiry"] is not None
    assert with_token(body["token"]).get("/api/projects/").status_code == 200

    AuthToken.objects.filter(user=alice).update(expiry=timezone.now() - timedelta(seconds=1))
    response = with_token(body["token"]).get("/api/projects/")

    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"
    assert not AuthToken.objects.exists()  # expired tokens are deleted on sight


def test_the_lifetime_comes_from_settings(alice, settings):
    settings.REST_KNOX = {**settings.REST_KNOX, "TOKEN_TTL": timedelta(minutes=5)}

    login()

    remaining = AuthToken.objects.get(user=alice).expiry - timezone.now()
    assert timedelta(minutes=4) < remaining <= timedelta(minutes=5)


def test_each_login_gets_its_own_token_and_logout_revokes_only_it(alice):
    first, second = login()["token"], login()["token"]
    assert first != second

    response = with_token(first).post(LOGOUT_URL)

    assert response.status_code == 204
    assert with_token(first).get("/api/projects/").status_code == 401
    assert with_token(second).get("/api/projects/").status_code == 200


def test_logout_without_a_token_is_401(db):
    response = APIClient().post(LOGOUT_URL)

    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"


def test_a_token_that_is_not_utf8_is_401_not_500(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token \xff\xfe")

    response = client.get("/api/projects/")

    assert response.status_code == 401


def test_login_is_throttled_per_client(alice, settings):
    settings.API_LOGIN_RATE = "3/minute"
    wrong = {"username": "alice", "password": "guess"}
    client = APIClient()

    answers = [client.post(TOKEN_URL, wrong, format="json").status_code for _ in range(3)]
    blocked = client.post(TOKEN_URL, CREDENTIALS, format="json")

    assert answers == [400, 400, 400]
    assert blocked.status_code == 429
    assert blocked["Content-Type"] == "application/json"
    assert error_code(blocked) == "throttled"
    assert int(blocked["Retry-After"]) > 0
    assert not AuthToken.objects.exists()  # even the right password waits


def test_the_default_login_rate_lets_a_person_retry_a_few_times(alice):
    for _ in range(5):
        APIClient().post(TOKEN_URL, {"username": "alice", "password": "typo"}, format="json")

    assert login()["token"]
