"""Make sure an admin user exists (used by `make run`).

Credentials come from DJANGO_SUPERUSER_USERNAME / DJANGO_SUPERUSER_PASSWORD /
DJANGO_SUPERUSER_EMAIL. Without a password a random one is generated and printed once,
when the user is created; an existing user is never changed.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Create the admin user if it does not exist (credentials from env, or a generated password)."

    def handle(self, *args: Any, **options: Any) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin").strip()
        if not username:
            raise CommandError("DJANGO_SUPERUSER_USERNAME is empty.")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "admin@localhost")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        User = get_user_model()
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"Admin user {username!r} already exists.")
            return
        generated = not password
        if generated:
            password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=email, password=password)
        if generated:
            self.stdout.write(
                self.style.WARNING(f"Created admin user {username!r} with password: {password}  (shown only once)")
            )
        else:
            self.stdout.write(f"Created admin user {username!r} (password from DJANGO_SUPERUSER_PASSWORD).")
