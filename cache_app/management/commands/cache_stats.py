"""manage.py cache_stats [--layer llm|rag] [--masterplan UUID] [--json]"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cache_app.console.cli import with_examples
from cache_app.statistics import cache_statistics

EXAMPLES = """  manage.py cache_stats                          every layer, all masterplans
  manage.py cache_stats --layer rag              the RAG query cache only
  manage.py cache_stats --masterplan 0b6f5e0e-6f2c-4f55-9a4e-1f0f2d9c1d3a --json
                                                 one masterplan, as GET /api/cache/statistics/ answers
"""
SECTIONS = {"llm": "llm_cache", "rag": "rag_cache"}
# Keys of the document that belong to no single layer; --layer keeps them and drops the rest.
LAYERLESS = ("masterplan_id", "llm_provider", "llm_provider_simulated")


class Command(BaseCommand):
    help = (
        "Cache statistics across every web and Celery process (the durable counters in Redis). "
        "--json prints the statistics endpoint's document."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        return super().create_parser(prog_name, subcommand, **with_examples(kwargs, EXAMPLES))

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--layer", choices=sorted(SECTIONS), help="Show one cache layer only.")
        parser.add_argument("--masterplan", metavar="UUID", help="Narrow every figure to one masterplan.")
        parser.add_argument("--json", action="store_true", help="Print JSON (the API's document) instead of text.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            doc = cache_statistics(options["masterplan"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        layer = options["layer"]
        if layer:
            doc = {key: doc[key] for key in (*LAYERLESS, SECTIONS[layer])}
        if options["json"]:
            self.stdout.write(json.dumps(doc, indent=2))
            return
        for line in _text(doc):
            self.stdout.write(line)


def _text(doc: dict[str, Any]) -> list[str]:
    scope = doc["masterplan_id"] or "all masterplans"
    lines = [f"Scope: {scope}"]
    if llm := doc.get("llm_cache"):
        lines.append(
            f"LLM prompt cache  hit rate {llm['hit_rate']:.1%}  hits {llm['total_hits']}  misses {llm['total_misses']}"
            f"  writes {llm['writes']}  invalidations {llm['invalidations']}  saved ${llm['cost_savings_usd']:.4f}"
        )
    if rag := doc.get("rag_cache"):
        lines.append(
            f"RAG query cache   hit rate {rag['hit_rate']:.1%}  exact hits {rag['exact_hits']}"
            f"  similar hits {rag['similar_hits']}  misses {rag['total_misses']}  writes {rag['writes']}"
            f"  invalidations {rag['invalidations']}"
        )
    if cost := doc.get("cost"):
        lines.append(
            f"Cost              spent ${cost['spent_usd']:.4f}  saved ${cost['saved_usd']:.4f}"
            f"  cost reduction {cost['cost_reduction']:.1%}  combined hit rate {doc['combined_hit_rate']:.1%}"
        )
    if batching := doc.get("batching"):
        lines.append(
            f"Batching          batches {batching['batches']}  requests {batching['total_requests_batched']}"
            f"  average size {batching['avg_batch_size']:.2f}  parse fallbacks {batching['parse_fallbacks']}"
        )
    if doc["llm_provider_simulated"]:
        lines.append("LLM provider: simulated (offline): its costs are modelled, not billed.")
    else:
        lines.append(f"LLM provider: {doc['llm_provider']}")
    return lines
