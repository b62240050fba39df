"""manage.py invalidate_cache --user NAME --masterplan UUID [--layer llm|rag] | --all --yes

The command acts as ``--user`` (or $MGECACHE_CLI_USER), who needs ``cache_app.invalidate_cache``.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cache_app import actions
from cache_app.access.cli import acting_user, add_user_argument
from cache_app.access.roles import INVALIDATE_CACHE
from cache_app.llm.cache import CacheUnavailableError


class Command(BaseCommand):
    help = "Invalidate cached LLM/RAG answers of one masterplan, or of whole layers."

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--masterplan", metavar="UUID", help="The masterplan whose cached answers to drop.")
        target.add_argument("--all", action="store_true", help="Drop every entry of the chosen layers.")
        parser.add_argument(
            "--layer",
            action="append",
            choices=actions.LAYERS,
            help="Repeat to choose several; default: all layers.",
        )
        parser.add_argument("--yes", action="store_true", help="Required with --all.")
        add_user_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        acting_user(options["user"], INVALIDATE_CACHE)
        layers = options["layer"] or list(actions.LAYERS)
        try:
            if options["all"]:
                if not options["yes"]:
                    raise CommandError("--all drops every cached answer of the layers; add --yes to confirm.")
                deleted = actions.invalidate_layers(layers)
                target = "all masterplans"
            else:
                deleted = actions.invalidate_masterplan(options["masterplan"], layers=layers)
                target = f"masterplan {options['masterplan']}"
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except CacheUnavailableError as exc:
            raise CommandError(f"Redis is unavailable, nothing was invalidated: {exc}") from exc
        summary = ", ".join(f"{layer}: {count} deleted now" for layer, count in deleted.items())
        self.stdout.write(
            self.style.SUCCESS(f"Invalidated {target} ({summary}; the rest is reclaimed in the background).")
        )
