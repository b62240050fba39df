"""manage.py commands act as a named user: the same permissions apply as in the API and the admin."""

from __future__ import annotations

import os
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser

CLI_USER_ENV = "MGECACHE_CLI_USER"


def add_user_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--user",
        metavar="NAME",
        help=f"The user this command acts as (its permissions apply); default: ${CLI_USER_ENV}.",
    )


def acting_user(username: str | None, perm: str) -> Any:
    """The active user named by ``--user`` (or $MGECACHE_CLI_USER) holding ``perm``, else CommandError."""
    name = (username or os.environ.get(CLI_USER_ENV, "")).strip()
    if not name:
        raise CommandError(f"Name the user this command acts as: --user NAME (or {CLI_USER_ENV}); it needs {perm}.")
    user = get_user_model().objects.filter(username=name).first()
    if user is None or not user.is_active:
        raise CommandError(f"No active user {name!r}.")
    if not user.has_perm(perm):
        raise CommandError(f"User {name!r} lacks the permission {perm} (the operator role has it); nothing was done.")
    return user
