"""manage.py invalidate_cache: the audited invalidation operation, from the command line.

The command acts as ``--user`` (or $MGECACHE_CLI_USER), who needs ``cache_app.invalidate_cache``.
"""

from __future__ import annotations

import sys
from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cache_app import actions
from cache_app.access.cli import acting_user, add_user_argument
from cache_app.access.roles import INVALIDATE_CACHE
from cache_app.llm.cache import CacheUnavailableError

EXAMPLES = """
examples:
  manage.py invalidate_cache --user ops --masterplan 6f1c0e5e-6c1f-4a8e-9c55-0d2b8f6f3a10
  manage.py invalidate_cache --user ops --masterplan 6f1c0e5e-6c1f-4a8e-9c55-0d2b8f6f3a10 --layer rag --yes
  manage.py invalidate_cache --user ops --masterplan 6f1c0e5e-6c1f-4a8e-9c55-0d2b8f6f3a10 --dry-run
  manage.py invalidate_cache --user ops --all-masterplans --layer all --yes
"""


class Command(BaseCommand):
    help = (
        "Invalidate the cached LLM/RAG answers of one masterplan, or of every masterplan. "
        "Records an audit row (Invalidations in the admin) and prints what was removed."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.epilog = EXAMPLES
        from argparse import RawDescriptionHelpFormatter

        parser.formatter_class = RawDescriptionHelpFormatter
        return parser

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--masterplan", metavar="UUID", help="The masterplan whose cached answers to drop.")
        target.add_argument(
            "--all-masterplans",
            "--all",
            dest="all_masterplans",
            action="store_true",
            help="Drop every entry of the chosen layers, whatever its masterplan.",
        )
        parser.add_argument(
            "--layer",
            action="append",
            choices=(*actions.LAYERS, actions.ALL_LAYERS),
            help="llm, rag or all; repeat to choose several (default: all).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Show how many entries would go; change nothing.")
        parser.add_argument(
            "--yes",
            action="store_true",
            help="Do not ask for confirmation (required with --all-masterplans when not on a terminal).",
        )
        add_user_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        user = acting_user(options["user"], INVALIDATE_CACHE)
        layers = options["layer"] or [actions.ALL_LAYERS]
        masterplan = options["masterplan"]
        target = "every masterplan" if options["all_masterplans"] else f"masterplan {masterplan}"
        try:
            chosen = actions.parse_layers(layers)
            counts = actions.count_entries(masterplan, chosen)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except (redis.RedisError, OSError) as exc:
            raise CommandError(f"Redis is unavailable, nothing was invalidated: {exc}") from exc
        summary = ", ".join(f"{layer}: {count}" for layer, count in counts.items())
        if options["dry_run"]:
            self.stdout.write(f"Dry run: would invalidate {target} ({summary} entries stored). Nothing was changed.")
            return
        self._confirm(options, f"Invalidate {target} ({summary} entries stored)?")
        audit = self._run(masterplan, options["all_masterplans"], chosen, user)
        removed = ", ".join(f"{layer}: {count}" for layer, count in audit.removed_by_layer.items())
        self.stdout.write(
            self.style.SUCCESS(
                f"Invalidated {target} ({removed} entries removed, {audit.duration_seconds:.3f} s). Audit {audit.pk}."
            )
        )

    def _confirm(self, options: dict[str, Any], question: str) -> None:
        if options["yes"]:
            return
        if not sys.stdin.isatty():
            if options["all_masterplans"]:
                raise CommandError("--all-masterplans drops every cached answer of the layers; add --yes to confirm.")
            return  # a single masterplan from a script: no prompt to answer
        if input(f"{question} Type 'yes' to continue: ").strip().lower() != "yes":
            raise CommandError("Cancelled; nothing was changed.")

    def _run(self, masterplan: str | None, all_masterplans: bool, layers: tuple[str, ...], user: Any) -> Any:
        try:
            audit = actions.request_invalidation(
                source="cli",
                masterplan_id=masterplan,
                all_masterplans=all_masterplans,
                layers=layers,
                actor=user,
                run_inline=True,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except CacheUnavailableError as exc:  # raised only if the audit could not record it
            raise CommandError(f"Redis is unavailable, nothing was invalidated: {exc}") from exc
        if audit.status != "succeeded":
            raise CommandError(f"Invalidation {audit.pk} failed: {audit.error}")
        return audit
