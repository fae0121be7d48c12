"""``manage.py rotate_credentials_key``: re-encrypt every stored provider
credential with the newest key of ``FERNET_KEYS``.

Rotation procedure (also in docs/credentials.md):

1. Prepend the new key: ``FERNET_KEYS=<new>,<old>`` (the first key encrypts,
   every key decrypts), and restart every web and worker process.
2. Run ``manage.py rotate_credentials_key`` (``--dry-run`` first to see the
   counts). Each row is read through the model (decrypted with whichever key
   wrote it) and saved back (encrypted with the new key).
3. Once it reports no failures, drop the old key: ``FERNET_KEYS=<new>``, and
   restart again. Rows still written with a removed key can no longer be read.
"""

from __future__ import annotations

from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from connectors.models import ProviderCredential

HELP = """Re-encrypt every provider credential with the first key of FERNET_KEYS.

Rotation: (1) prepend the new key, FERNET_KEYS=<new>,<old>, and restart all
processes; (2) run this command (try --dry-run first); (3) when it reports no
failures, remove the old key, FERNET_KEYS=<new>, and restart again."""


class Command(BaseCommand):
    help = HELP

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Only check that every credential decrypts with the current keys; write nothing.",
        )

    def handle(self, *args, dry_run: bool = False, **options) -> None:
        pks = list(ProviderCredential.objects.order_by("pk").values_list("pk", flat=True))
        rotated, unreadable = 0, []
        for pk in pks:
            try:
                rotated += self.rotate_one(pk, dry_run=dry_run)
            except InvalidToken:
                # Written with a key no longer in FERNET_KEYS; the value is lost
                # unless that key is put back (at the end of the list).
                unreadable.append(pk)
        verb = "would re-encrypt" if dry_run else "re-encrypted"
        self.stdout.write(
            f"{len(pks)} credential(s): {verb} {rotated}, unreadable {len(unreadable)}."
        )
        if unreadable:
            raise CommandError(
                "credential(s) "
                + ", ".join(str(pk) for pk in unreadable)
                + " cannot be decrypted with any key of FERNET_KEYS; add the key that wrote "
                "them (after the new one) and run again."
            )

    def rotate_one(self, pk: int, *, dry_run: bool) -> int:
        """Read one credential (decrypting it) and, unless ``dry_run``, save it
        back encrypted with the first key. Returns 1 when it was (or would be)
        re-encrypted, 0 when the row vanished meanwhile."""
        with transaction.atomic():
            credential = ProviderCredential.objects.select_for_update().filter(pk=pk).first()
            if credential is None:
                return 0
            if not dry_run:
                # update_fields: a key rotation is not a credential change, so
                # updated_at (shown as "last changed") stays as it was.
                credential.save(update_fields=["payload"])
        return 1
