"""manage.py tune_policy --user NAME --layer llm|rag [--ttl S] [--threshold X] [--enable|--disable] ...

The command acts as ``--user`` (or $MGECACHE_CLI_USER), who needs ``cache_app.tune_policy``; the change
leaves a policy-change audit row with the old and new values.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cache_app.access.cli import acting_user, add_user_argument
from cache_app.access.roles import TUNE_POLICY
from cache_app.console.cli import with_examples
from cache_app.console.tuning import tune_layer_policy
from cache_app.core import conf

EXAMPLES = """  manage.py tune_policy --user ops --layer rag --ttl 7200 --threshold 0.96
  manage.py tune_policy --user ops --layer llm --ttl 43200 --notes "prompts change daily"
  manage.py tune_policy --user ops --layer llm --cache-truncated no
  manage.py tune_policy --user ops --layer rag --disable
"""
MAX_NOTES = 2000
YES_NO = {"yes": True, "no": False}


class Command(BaseCommand):
    help = (
        "Change a cache layer's policy (TTL, similarity threshold, store rules) with the admin's validation. "
        "Every process uses the new values within POLICY_REFRESH_SECONDS."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return super().create_parser(prog_name, subcommand, **with_examples(kwargs, EXAMPLES))

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--layer", required=True, choices=("llm", "rag"), help="The cache layer to tune.")
        parser.add_argument("--ttl", type=int, metavar="SECONDS", help="Entry lifetime, 1 s to 30 days.")
        parser.add_argument("--threshold", type=float, help="RAG only: minimum similarity, 0.5 to 1.0.")
        switch = parser.add_mutually_exclusive_group()
        switch.add_argument("--enable", dest="enabled", action="store_const", const=True, help="Turn the cache on.")
        switch.add_argument("--disable", dest="enabled", action="store_const", const=False, help="Turn it off.")
        parser.add_argument("--cache-nonzero-temperature", choices=sorted(YES_NO), help="LLM only.")
        parser.add_argument("--cache-truncated", choices=sorted(YES_NO), help="LLM only.")
        parser.add_argument("--notes", help=f"Why (at most {MAX_NOTES} characters).")
        add_user_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        changes = _changes(options)
        if not changes:
            raise CommandError("Nothing to change: give --ttl, --threshold, --enable/--disable, ... (see --help).")
        user = acting_user(options["user"], TUNE_POLICY)
        try:
            update = tune_layer_policy(options["layer"], changes, source="cli", actor=user)
        except ValidationError as exc:
            raise CommandError(_messages(exc)) from exc
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if update.audit is None:
            self.stdout.write(f"{options['layer']} policy: already so; nothing changed.")
            return
        before, after = update.audit.old_values, update.audit.new_values
        summary = ", ".join(f"{name} {before.get(name)!r} -> {after[name]!r}" for name in after)
        summary += f" (audit {update.audit.pk})"
        seconds = conf.get("POLICY_REFRESH_SECONDS")
        self.stdout.write(
            self.style.SUCCESS(f"{options['layer']} policy: {summary}. Every process uses it within {seconds:g} s.")
        )


def _changes(options: dict[str, Any]) -> dict[str, Any]:
    if options["notes"] is not None and len(options["notes"]) > MAX_NOTES:
        raise CommandError(f"--notes is longer than {MAX_NOTES} characters.")
    changes = {
        "ttl_seconds": options["ttl"],
        "similarity_threshold": options["threshold"],
        "enabled": options["enabled"],
        "notes": options["notes"],
    }
    for flag in ("cache_nonzero_temperature", "cache_truncated"):
        if options[flag] is not None:
            changes[flag] = YES_NO[options[flag]]
    return {name: value for name, value in changes.items() if value is not None}


def _messages(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items())
    return " ".join(exc.messages)
