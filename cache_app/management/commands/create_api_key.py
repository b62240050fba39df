"""manage.py create_api_key --user NAME [--name NAME] [--masterplan UUID ...] [--expires-days N]

Prints the new key once: only its hash is stored. The key acts as the user, with the
user's role; ``--masterplan`` (repeatable) restricts it to those masterplans, which are
registered as ``Masterplan`` rows (named by their id) if new.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from cache_app.models import Masterplan, PipelineAPIKey

MAX_EXPIRY_DAYS = 3650


class Command(BaseCommand):
    help = "Create an API key for a user and print it (once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, metavar="NAME", help="The user the key acts as.")
        parser.add_argument("--name", help="A name for the key (default: '<user> key').")
        parser.add_argument(
            "--masterplan",
            action="append",
            metavar="UUID",
            default=[],
            help="Restrict the key to this masterplan (repeat for several). None: unrestricted.",
        )
        parser.add_argument("--expires-days", type=int, metavar="N", help="The key stops working after N days.")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None or not user.is_active:
            raise CommandError(f"No active user {options['user']!r}.")
        masterplans = [_parse_uuid(value) for value in options["masterplan"]]
        days = options["expires_days"]
        if days is not None and not 1 <= days <= MAX_EXPIRY_DAYS:
            raise CommandError(f"--expires-days must be between 1 and {MAX_EXPIRY_DAYS}.")
        name = (options["name"] or f"{user.get_username()} key")[:50]
        with transaction.atomic():
            created, key = PipelineAPIKey.objects.create_key(
                name=name,
                user=user,
                restricted=bool(masterplans),
                expiry_date=timezone.now() + timedelta(days=days) if days else None,
            )
            api_key = cast(PipelineAPIKey, created)
            for masterplan_id in masterplans:
                masterplan, _ = Masterplan.objects.get_or_create(
                    pk=masterplan_id, defaults={"name": str(masterplan_id)}
                )
                api_key.masterplans.add(masterplan)
        scope = ", ".join(str(m) for m in masterplans) if masterplans else "every masterplan the role allows"
        self.stderr.write(f"API key {api_key.prefix} ({name!r}) for {user.get_username()}; scope: {scope}.")
        self.stderr.write("Store it now: it is shown only once. Send it as 'Authorization: Bearer <key>'.")
        self.stdout.write(key)


def _parse_uuid(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CommandError(f"--masterplan must be a UUID, got {value!r}.")
