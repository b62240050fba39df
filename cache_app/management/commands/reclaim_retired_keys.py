"""manage.py reclaim_retired_keys: delete the keys of retired key-scheme versions (after an upgrade).

The command acts as ``--user`` (or $MGECACHE_CLI_USER), who needs ``cache_app.invalidate_cache``.
"""

from __future__ import annotations

from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cache_app.access.cli import acting_user, add_user_argument
from cache_app.access.roles import INVALIDATE_CACHE
from cache_app.core import keys, retired
from cache_app.core.cluster import ClusterClientError
from cache_app.core.redis_client import get_redis


class Command(BaseCommand):
    help = (
        "Delete the Redis keys of retired key-scheme versions "
        f"({', '.join(keys.RETIRED_VERSIONS)}), which nothing reads any more. SCAN + UNLINK on every primary."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_user_argument(parser)
        parser.add_argument("--dry-run", action="store_true", help="Count the retired keys; delete nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        acting_user(options.get("user"), INVALIDATE_CACHE)
        client = get_redis()
        try:
            if options["dry_run"]:
                count = retired.count_retired_keys(client)
                self.stdout.write(f"{count} retired keys ({', '.join(retired.retired_prefixes())}*)")
                return
            removed = retired.reclaim_retired_keys(client)
        except (redis.RedisError, OSError, ClusterClientError) as exc:
            raise CommandError(f"Redis is unavailable: {type(exc).__name__}") from exc
        self.stdout.write(f"deleted {removed} retired keys")
