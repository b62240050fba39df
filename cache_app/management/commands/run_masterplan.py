"""manage.py run_masterplan --workload FILE: what does mgecache save on this workload?

Runs the workload (docs/benchmarks.md has the format) without caches (baseline), with
them (cached), or both in one invocation, each on fresh cache scopes, and reports hit
rates, upstream calls and tokens, spend, and time, per run and per wave. The provider is
the offline simulator by default, its latency model scaled by ``--latency-scale``
(0.25: every simulated call sleeps a quarter of its modelled latency; modelled times are
reported at full scale). Nothing runs if the workload, the documents or an output path
is invalid.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from cache_app.core import conf
from cache_app.proof import plot, report
from cache_app.proof.runner import (
    DEFAULT_CONCURRENCY,
    DEFAULT_LATENCY_SCALE,
    DEFAULT_OUTPUT_TOKENS,
    MODES,
    DocumentsError,
    Options,
    read_documents,
    run_masterplan,
)
from cache_app.proof.workload import Step, WorkloadError, parse_workload


def _bounded(kind: type, low: float, high: float, what: str) -> Any:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise CommandError(f"{what} must be a {kind.__name__}, got {raw!r}")
        if not low <= value <= high:
            raise CommandError(f"{what} must be from {low:g} to {high:g}, got {raw}")
        return value

    return parse


class Command(BaseCommand):
    help = "Measure hit rate, cost and time of a masterplan workload against a no-cache baseline."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workload", required=True, help="JSONL workload, one atom per line.")
        parser.add_argument("--documents", default=None, help="JSONL file or folder of .txt files for the RAG store.")
        parser.add_argument("--mode", choices=MODES, default="both", help="baseline, cached, or both (default).")
        parser.add_argument("--report", default=None, help="Write the JSON report here.")
        parser.add_argument("--plot", default=None, help="Write a chart here (.svg; .png needs matplotlib).")
        parser.add_argument(
            "--latency-scale",
            type=_bounded(float, 0.0, 100.0, "--latency-scale"),
            default=DEFAULT_LATENCY_SCALE,
            help=f"Simulated provider: sleep this fraction of the modelled latency (default {DEFAULT_LATENCY_SCALE}).",
        )
        parser.add_argument(
            "--output-tokens",
            type=_bounded(int, 1, 32_000, "--output-tokens"),
            default=DEFAULT_OUTPUT_TOKENS,
            help=f"Simulated provider: tokens per answer, capped by max_tokens (default {DEFAULT_OUTPUT_TOKENS}).",
        )
        parser.add_argument(
            "--concurrency",
            type=_bounded(int, 1, 1000, "--concurrency"),
            default=DEFAULT_CONCURRENCY,
            help=f"Atoms of a wave in flight at once (default {DEFAULT_CONCURRENCY}).",
        )
        parser.add_argument("--batching", action="store_true", help="Cached run: send misses through the batcher.")
        parser.add_argument(
            "--provider",
            choices=conf.LLM_PROVIDERS,
            default="simulated",
            help="LLM provider (default simulated; a real one is billed).",
        )
        parser.add_argument(
            "--keep-scopes", action="store_true", help="Keep the runs' masterplans, documents and cache entries."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            workload = parse_workload(options["workload"])
            documents = Path(options["documents"]) if options["documents"] else None
            if documents is not None:
                read_documents(documents)  # refuse bad documents before anything runs
        except (WorkloadError, DocumentsError) as exc:
            raise CommandError(str(exc))
        report_path = self._output(options["report"])
        plot_path = self._output(options["plot"])
        if plot_path is not None:
            try:
                plot.check_target(plot_path)
            except plot.PlotError as exc:
                raise CommandError(str(exc))
        quiet = options["verbosity"] == 0

        def progress(mode: str, step: Step) -> Any:
            return tqdm(
                total=len(step.atoms),
                desc=f"{mode:8} run {step.run} wave {step.wave}",
                unit="atom",
                file=sys.stderr,
                disable=quiet,
            )

        run_options = Options(
            mode=options["mode"],
            documents=documents,
            provider=options["provider"],
            latency_scale=options["latency_scale"],
            output_tokens=options["output_tokens"],
            concurrency=options["concurrency"],
            batching=options["batching"],
            keep_scopes=options["keep_scopes"],
            progress=progress,
        )
        try:
            result = run_masterplan(workload, run_options)
        except DocumentsError as exc:
            raise CommandError(str(exc))
        if report_path is not None:
            report_path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        if plot_path is not None:
            plot.write_plot(result, plot_path)
        if not quiet:
            self.stdout.write("\n".join(report.summary_lines(result)))

    @staticmethod
    def _output(raw: str | None) -> Path | None:
        if not raw:
            return None
        path = Path(raw)
        if not path.parent.exists():
            raise CommandError(f"{path.parent} does not exist (for {path})")
        if path.is_dir():
            raise CommandError(f"{path} is a directory")
        return path
