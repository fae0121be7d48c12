"""Key rotation: ``rotate_credentials_key`` re-encrypts every credential with the
newest key, so the old key can be dropped and credentials still decrypt.

``fernet_fields`` caches its keys on the field instance; ``restart_with_keys``
clears that cache, as a process restart with the new ``FERNET_KEYS`` would.
"""

from __future__ import annotations

from io import StringIO

import pytest
from cryptography.fernet import InvalidToken
from django.core.management import CommandError, call_command
from django.db import connection

from connectors import services
from connectors.management.commands.rotate_credentials_key import Command
from connectors.models import ProviderCredential

pytestmark = pytest.mark.django_db

OLD_KEY = "test-fernet-key-1"  # ccdash.settings_test
NEW_KEY = "rotated-fernet-key-2"
SECRET = "rot-key-Aa1Bb2Cc3Dd4Ee5"
CACHED = ("keys", "fernet_keys", "fernet")


def clear_key_cache() -> None:
    field = ProviderCredential._meta.get_field("payload")
    for name in CACHED:
        field.__dict__.pop(name, None)


@pytest.fixture
def restart_with_keys(settings):
    def restart(*keys: str) -> None:
        settings.FERNET_KEYS = list(keys)
        clear_key_cache()

    clear_key_cache()
    yield restart
    clear_key_cache()  # the settings fixture restores the keys after this


@pytest.fixture
def credential(project, fake, restart_with_keys) -> ProviderCredential:
    restart_with_keys(OLD_KEY)
    services.write_credentials(project, "fake", {"apiKey": SECRET}, user=None)
    return ProviderCredential.objects.get(config__project=project)


def raw(credential: ProviderCredential) -> bytes:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT payload FROM connectors_providercredential WHERE id = %s", [credential.pk]
        )
        return bytes(cursor.fetchone()[0])


def run_rotation(*args: str) -> str:
    out = StringIO()
    call_command("rotate_credentials_key", *args, stdout=out)
    return out.getvalue()


def test_credentials_decrypt_after_rotation_and_removal_of_the_old_key(
    credential, restart_with_keys
):
    restart_with_keys(NEW_KEY, OLD_KEY)

    output = run_rotation()

    assert "re-encrypted 1" in output
    restart_with_keys(NEW_KEY)
    assert ProviderCredential.objects.get(pk=credential.pk).values == {"apiKey": SECRET}


def test_without_rotation_removing_the_old_key_loses_the_credential(credential, restart_with_keys):
    restart_with_keys(NEW_KEY)

    with pytest.raises(InvalidToken):
        ProviderCredential.objects.get(pk=credential.pk)


def test_rotation_rewrites_the_ciphertext_but_not_the_last_changed_time(
    credential, restart_with_keys
):
    before, changed_at = raw(credential), credential.updated_at
    restart_with_keys(NEW_KEY, OLD_KEY)

    run_rotation()

    credential.refresh_from_db()
    assert raw(credential) != before
    assert credential.updated_at == changed_at


def test_dry_run_writes_nothing(credential, restart_with_keys):
    before = raw(credential)
    restart_with_keys(NEW_KEY, OLD_KEY)

    output = run_rotation("--dry-run")

    assert "would re-encrypt 1" in output
    assert raw(credential) == before


def test_a_credential_no_key_can_read_is_reported_and_the_rest_rotated(
    credential, project, restart_with_keys
):
    restart_with_keys("lost-key-0")
    services.write_credentials(project, "local", {}, user=None)  # a second, readable row
    lost = credential.pk
    restart_with_keys(NEW_KEY, "lost-key-0")

    with pytest.raises(CommandError, match=f"credential\\(s\\) {lost} cannot be decrypted"):
        run_rotation()

    restart_with_keys(NEW_KEY)
    assert ProviderCredential.objects.exclude(pk=lost).get().values == {}


def test_help_documents_the_rotation_procedure():
    assert "prepend the new key" in Command.help
    assert "remove the old key" in Command.help
