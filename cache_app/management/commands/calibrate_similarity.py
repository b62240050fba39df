"""manage.py calibrate_similarity --pairs FILE.jsonl [--embedder NAME] [--thresholds SPEC] [--apply]"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cache_app import actions
from cache_app.access.cli import acting_user, add_user_argument
from cache_app.access.roles import TUNE_POLICY
from cache_app.rag import calibration


class Command(BaseCommand):
    help = (
        "Measure false hits, near-duplicate and paraphrase hit rates of the RAG similarity cache on labelled "
        "query pairs, for candidate thresholds with and without the hit guard; recommend the lowest threshold "
        "with zero false hits (--apply writes it to the RAG policy)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--pairs", required=True, metavar="FILE.jsonl", help='Lines of {"a","b","same","kind"}.')
        parser.add_argument(
            "--embedder",
            metavar="NAME",
            help="hashed, minilm or a dotted path (default: MGECACHE['EMBEDDER']).",
        )
        parser.add_argument(
            "--thresholds",
            metavar="SPEC",
            help="Candidate thresholds: 0.8,0.9 or start:stop:step (default 0.70:0.99:0.01).",
        )
        parser.add_argument("--json", action="store_true", help="Print the report as JSON instead of a table.")
        parser.add_argument(
            "--apply",
            action="store_true",
            help="Write the recommended threshold to the RAG cache policy (audited; needs --user with tune_policy).",
        )
        add_user_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        user = acting_user(options["user"], TUNE_POLICY) if options["apply"] else None
        try:
            thresholds = (
                calibration.parse_thresholds(options["thresholds"])
                if options["thresholds"]
                else calibration.DEFAULT_THRESHOLDS
            )
            report = calibration.run(options["pairs"], embedder=options["embedder"], thresholds=thresholds)
        except (calibration.PairsError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2))
        else:
            self.stdout.write(calibration.format_report(report))
        if not options["apply"]:
            return
        try:
            change = actions.tune_similarity_threshold(report, source="cli", actor=user)
        except ValueError as exc:
            raise CommandError(f"Not applied: {exc}") from exc
        guard = "with" if change.guarded else "without"
        message = f"RAG similarity threshold {change.old:.2f} -> {change.new:.2f} (policy {guard} the hit guard)."
        self.stdout.write(self.style.SUCCESS(message))
