"""End to end: a simulated masterplan run with and without mgecache, in one run.

    .venv/bin/python benchmarks/pipeline.py     # ~20 s; REDIS_URL, else redis://127.0.0.1:6379/12

Checks the original plan's success metrics (hit rate >= 60%, cost reduction >= 30%,
execution time reduction >= 40%) on a stated workload, because those figures depend on
how repetitive the pipeline is. The workload:

* a masterplan of ``--waves`` waves x ``--atoms`` atoms; atoms of a wave run concurrently;
* each atom makes one LLM call (LLMClient, SIMULATED provider: ``overhead + per-token``
  latency, 120 output tokens, priced as claude-3-5-sonnet at 3 / 15 USD per 1M tokens) and
  one retrieval (RAG query cache in front of a simulated 20 ms vector search);
* ``--repeat-share`` of the atoms reuse an earlier atom's prompt (shared templates), and
  as many RAG queries are near-duplicates (case, punctuation, word order);
* the masterplan is run twice, as when a failed run is retried.

The baseline runs the same workload with ``use_cache=False`` and no RAG cache. Hit rate is
(LLM cache hits + merged duplicates + RAG hits) / lookups. Prints a table and one JSON line.
Nothing here is a real model: it measures mgecache's effect, not an LLM's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mgecache_site.settings")
os.environ.setdefault("DJANGO_DEBUG", "true")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/12")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

from cache_app.core.counters import DurableCounters  # noqa: E402
from cache_app.core.policies import DEFAULT_BATCH, DEFAULT_LAYERS  # noqa: E402
from cache_app.core.redis_client import get_redis  # noqa: E402
from cache_app.llm.cache import LLMPromptCache  # noqa: E402
from cache_app.llm.client import LLMClient  # noqa: E402
from cache_app.llm.pricing import Price, PriceTable, SavingsLedger  # noqa: E402
from cache_app.llm.providers.simulated import SimulatedProvider  # noqa: E402
from cache_app.rag.cache import RAGIndex, RAGQueryCache  # noqa: E402
from cache_app.rag.embedders import HashedNgramEmbedder  # noqa: E402

MODEL = "claude-3-5-sonnet"
SEARCH_SECONDS = 0.020


class DefaultPolicies:
    """The seeded defaults (24 h / 1 h TTLs, 0.95), without a database."""

    def llm(self):
        return DEFAULT_LAYERS["llm"]

    def rag(self):
        return DEFAULT_LAYERS["rag"]

    def layer(self, name):
        return DEFAULT_LAYERS[name]

    def batch(self):
        return DEFAULT_BATCH


def workload(waves: int, atoms: int, repeat_share: float, seed: int) -> list[list[tuple[str, str]]]:
    """Per wave, (prompt, rag query) per atom."""
    rng = random.Random(seed)
    made: list[tuple[str, str]] = []
    plan = []
    for w in range(waves):
        wave = []
        for a in range(atoms):
            if made and rng.random() < repeat_share:
                prompt, query = rng.choice(made)
                words = query.rstrip("?").split()
                rng.shuffle(words)
                wave.append((prompt, " ".join(words).upper() + "!"))  # same prompt, near-duplicate query
            else:
                n = len(made)
                prompt = f"Wave {w}, atom {a}: implement component {n} of the parser with tests."
                query = f"How does component {n} of the parser handle token stream {n * 7} errors?"
                made.append((prompt, query))
                wave.append((prompt, query))
        plan.append(wave)
    return plan


async def run(plan, *, cached: bool, client: LLMClient, rag: RAGQueryCache | None, embedder) -> dict:
    stats = {"llm_calls": 0, "llm_hits": 0, "merged": 0, "rag_lookups": 0, "rag_hits": 0, "spent": 0.0, "saved": 0.0}
    mp = uuid.uuid4()

    async def atom(prompt: str, query: str) -> None:
        response = await client.generate(prompt, MODEL, 0.0, masterplan_id=mp, use_cache=cached)
        stats["spent"] += response.cost_usd
        stats["saved"] += response.saved_usd
        if response.cache_layer == "llm":
            stats["llm_hits"] += 1
        elif response.cache_layer == "singleflight":
            stats["merged"] += 1
        else:
            stats["llm_calls"] += 1
        vector = embedder.embed([query])[0]
        stats["rag_lookups"] += 1
        if rag is not None:
            hit = await rag.aget(query, vector, embedding_model=embedder.model_name, top_k=5, masterplan_id=mp)
            if hit is not None:
                stats["rag_hits"] += 1
                return
        await asyncio.sleep(SEARCH_SECONDS)  # the vector search a miss pays
        if rag is not None:
            docs = [{"content": f"passage for {query[:40]}", "score": 0.9}]
            await rag.aset(query, vector, docs, embedding_model=embedder.model_name, top_k=5, masterplan_id=mp)

    started = time.perf_counter()
    stats["run_wall_s"] = []
    for _attempt in range(2):  # the run, then its retry
        run_started = time.perf_counter()
        for wave in plan:
            await asyncio.gather(*(atom(p, q) for p, q in wave))
        stats["run_wall_s"].append(time.perf_counter() - run_started)
    stats["wall_s"] = time.perf_counter() - started
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--waves", type=int, default=6)
    parser.add_argument("--atoms", type=int, default=20)
    parser.add_argument("--repeat-share", type=float, default=0.3)
    # The simulated provider's documented defaults (SIMULATED_CALL_OVERHEAD_SECONDS and
    # SIMULATED_SECONDS_PER_OUTPUT_TOKEN): about 0.9 s for a 120-token answer.
    parser.add_argument("--overhead", type=float, default=0.3, help="simulated seconds per LLM call")
    parser.add_argument("--per-token", type=float, default=0.005, help="simulated seconds per output token")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    prefix = f"mgecache-bench-{uuid.uuid4().hex[:8]}"
    settings.MGECACHE = {**settings.MGECACHE, "KEY_PREFIX": prefix}
    plan = workload(args.waves, args.atoms, args.repeat_share, args.seed)
    embedder = HashedNgramEmbedder()
    prices = PriceTable(loader=lambda: {MODEL: Price(Decimal("3.00"), Decimal("15.00"))})
    policies = DefaultPolicies()

    def client() -> LLMClient:
        provider = SimulatedProvider(
            call_overhead_seconds=args.overhead, seconds_per_output_token=args.per_token, output_tokens=120
        )
        ledger = SavingsLedger(counters=DurableCounters(), prices=prices)
        return LLMClient(provider, prompt_cache=LLMPromptCache(policies=policies), pricing=ledger, policies=policies)

    try:
        baseline = asyncio.run(run(plan, cached=False, client=client(), rag=None, embedder=embedder))
        with_cache = asyncio.run(
            run(
                plan,
                cached=True,
                client=client(),
                rag=RAGQueryCache(policies=policies, index=RAGIndex()),
                embedder=embedder,
            )
        )
    finally:
        redis = get_redis()
        batch = list(redis.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(batch), 1000):
            redis.unlink(*batch[start : start + 1000])

    lookups = 2 * with_cache["rag_lookups"]
    hits = with_cache["llm_hits"] + with_cache["merged"] + with_cache["rag_hits"]
    results = {
        "atoms_per_run": args.waves * args.atoms,
        "hit_rate": hits / lookups,
        "llm_hit_rate": (with_cache["llm_hits"] + with_cache["merged"]) / with_cache["rag_lookups"],
        "rag_hit_rate": with_cache["rag_hits"] / with_cache["rag_lookups"],
        "cost_reduction": 1 - with_cache["spent"] / baseline["spent"],
        "saved_share": with_cache["saved"] / (with_cache["saved"] + with_cache["spent"]),
        "time_reduction": 1 - with_cache["wall_s"] / baseline["wall_s"],
        "baseline": baseline,
        "mgecache": with_cache,
    }
    print(f"Pipeline benchmark, SIMULATED LLM and search: {args.waves} waves x {args.atoms} atoms, run twice,")
    print(f"{args.repeat_share:.0%} repeated prompts / near-duplicate queries, redis={os.environ['REDIS_URL']}")
    print(f"{'':28}{'baseline':>12}{'mgecache':>12}")
    for label, key in (("LLM provider calls", "llm_calls"), ("spent (USD)", "spent"), ("wall time (s)", "wall_s")):
        print(f"{label:28}{baseline[key]:>12.4g}{with_cache[key]:>12.4g}")
    for attempt, name in enumerate(("first run", "retry")):
        base_s, cached_s = baseline["run_wall_s"][attempt], with_cache["run_wall_s"][attempt]
        print(f"{'  wall, ' + name + ' (s)':28}{base_s:>12.4g}{cached_s:>12.4g}")
    targets = (("hit_rate", 0.60), ("cost_reduction", 0.30), ("time_reduction", 0.40))
    for name, target in targets:
        verdict = "OK" if results[name] >= target else "MISSED"
        print(f"  {name:16} {results[name]:6.1%}  (target >= {target:.0%}) {verdict}")
    print("JSON " + json.dumps(results))


if __name__ == "__main__":
    main()
