"""RAG similarity hit guard benchmark: its cost per candidate, and lookups at 10k entries with it on.

    .venv/bin/python benchmarks/similarity_guard.py          # REDIS_URL, else redis://127.0.0.1:6379/12

1. Guard cost, on the texts of benchmarks/similarity_pairs.jsonl (code-search questions,
   20-120 characters): ``prepare`` (the lookup's own query, once per lookup), ``check`` of a
   candidate whose features are not memoised yet (``cold``: extraction + comparison) and of
   one seen before (``warm``), and the lexical near-duplicate test. Best of 5 passes over all
   pairs, in µs per call. Target: <= 50 µs per candidate.
2. ``RAGQueryCache.get`` at N = 10,000 entries of one namespace (384-d random unit vectors,
   each stored under a distinct code-search question), 300 lookups of each kind, with the
   policy's guard on and off (same index, same Redis, same run):
   * miss: nothing near;
   * hit: cosine 0.97 to a stored entry, the same question in lower case (the guard accepts);
   * rejected: cosine 0.97 to a stored entry, the question with another ticket number (the
     guard rejects it: a miss; without the guard, a false hit);
   * near-duplicate: cosine 0.92 to a stored entry (below the 0.95 threshold), the question
     with a typo (served by the guard's near-duplicate tier; a miss without it).
   Target: p50 <= 1 ms with the guard on.

Keys live under a unique MGECACHE_KEY_PREFIX and are removed with SCAN + UNLINK at the end.
Prints a table and one JSON line. Takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import timeit
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mgecache_site.settings")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only-not-a-secret")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost")
os.environ["MGECACHE_KEY_PREFIX"] = f"mgecache-bench-{uuid.uuid4().hex[:10]}"

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
import similarity_pairs  # noqa: E402

from cache_app.core import keys  # noqa: E402
from cache_app.core.policies import LayerPolicy  # noqa: E402
from cache_app.core.redis_client import get_redis  # noqa: E402
from cache_app.rag import guard  # noqa: E402
from cache_app.rag.cache import RAGIndex, RAGQueryCache  # noqa: E402
from cache_app.rag.calibration import load_pairs  # noqa: E402

DIM = 384
TOP_K = 5
MODEL = "bench-guard"
DOCS = [{"content": "x" * 400, "metadata": {"source": "bench", "chunk": i}, "score": 0.5} for i in range(TOP_K)]
TARGETS = {"check_cold_us": 50.0, "lookup_p50_ms_10k": 1.0}


class StaticPolicies:
    def __init__(self, guarded: bool) -> None:
        self.policy = LayerPolicy(layer="rag", ttl_seconds=3600, similarity_threshold=0.95, similarity_guard=guarded)

    def rag(self) -> LayerPolicy:
        return self.policy


def best_us(fn, calls: int, repeat: int = 5) -> float:
    return min(timeit.repeat(fn, number=1, repeat=repeat)) / calls * 1e6


def bench_guard_cost() -> dict:
    pairs = load_pairs(ROOT / "benchmarks" / "similarity_pairs.jsonl")
    rule = guard.RuleGuard()
    lookups = [p.b for p in pairs]
    cached = [p.a for p in pairs]
    prepared = [rule.prepare(q) for q in lookups]

    def prepare_all() -> None:
        for q in lookups:
            rule.prepare(q)

    def check_cold() -> None:
        guard.clear_feature_cache()
        for state, candidate in zip(prepared, cached, strict=True):
            rule.check(state, candidate)

    def check_warm() -> None:
        for state, candidate in zip(prepared, cached, strict=True):
            rule.check(state, candidate)

    def near_duplicate() -> None:
        for state, candidate in zip(prepared, cached, strict=True):
            rule.near_duplicate(state, candidate)

    check_warm()
    n = len(pairs)
    lengths = sorted(len(q) for q in lookups + cached)
    return {
        "pairs": n,
        "chars_p50": lengths[len(lengths) // 2],
        "chars_max": lengths[-1],
        "prepare_us": best_us(prepare_all, n),
        "check_cold_us": best_us(check_cold, n),
        "check_warm_us": best_us(check_warm, n),
        "near_duplicate_us": best_us(near_duplicate, n),
    }


# --- lookups -----------------------------------------------------------------------------------


def unit_rows(n: int, seed: int) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def near(v: np.ndarray, rng: np.random.Generator, cosine: float) -> np.ndarray:
    other = rng.standard_normal(DIM)
    other -= other.dot(v) * v
    other /= np.linalg.norm(other)
    return (cosine * v + np.sqrt(1 - cosine**2) * other).astype(np.float32)


def questions(n: int) -> list[str]:
    rng = random.Random(11)
    return [f"{similarity_pairs.fill(rng.choice(similarity_pairs.QUESTIONS), rng)} (ticket {i})" for i in range(n)]


def populate(cache: RAGQueryCache, texts: list[str], m: np.ndarray) -> None:
    def write(chunk: range) -> None:
        for i in chunk:
            cache.set(texts[i], m[i], DOCS, embedding_model=MODEL, top_k=TOP_K)

    step = (len(m) + 7) // 8
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, [range(s, min(s + step, len(m))) for s in range(0, len(m), step)]))


def typo(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if w.isalpha() and w.islower() and len(w) >= 5 and w[2] != w[3]]
    i = rng.choice(spots)
    w = words[i]
    words[i] = w[:2] + w[3] + w[2] + w[4:]  # two neighbours swapped
    return " ".join(words)


def summary(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "p50_ms": ordered[len(ordered) // 2] * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1e3,
        "n": len(samples),
    }


UNEXPECTED: list[str] = []

Probe = tuple[str, np.ndarray, dict[bool, str | None]]  # query, vector, expected answer with / without the guard


def timed_lookups(caches: dict[bool, RAGQueryCache], probes: list[Probe]) -> dict[bool, list[float]]:
    """Each probe with the guard on and off, alternating which goes first (machine load hits both alike)."""
    out: dict[bool, list[float]] = {True: [], False: []}
    for i, (text, vector, expected) in enumerate(probes):
        for guarded in (True, False) if i % 2 else (False, True):
            t0 = time.perf_counter()
            hit = caches[guarded].get(text, vector, embedding_model=MODEL, top_k=TOP_K)
            out[guarded].append(time.perf_counter() - t0)
            got = None if hit is None else hit.query
            if got != expected[guarded]:
                UNEXPECTED.append(f"{text!r} (guard {guarded}): expected {expected[guarded]!r}, got {got!r}")
    return out


def bench_lookups(client, n: int, samples: int) -> dict:
    texts = questions(n)
    m = unit_rows(n, seed=5)
    writer = RAGQueryCache(client, policies=StaticPolicies(True), index=RAGIndex())
    populate(writer, texts, m)
    index = RAGIndex()
    caches = {
        guarded: RAGQueryCache(client, policies=StaticPolicies(guarded), index=index) for guarded in (True, False)
    }
    caches[True].get("warm-up", unit_rows(1, seed=6)[0], embedding_model=MODEL, top_k=TOP_K)  # rebuild once
    rng, words = np.random.default_rng(7), random.Random(8)
    targets = rng.integers(0, n, size=samples)
    kinds: dict[str, list[Probe]] = {
        "miss": [
            (f"unrelated question {i}", v, {True: None, False: None}) for i, v in enumerate(unit_rows(samples, 9))
        ],
        "hit": [(texts[t].lower(), near(m[t], rng, 0.97), {True: texts[t], False: texts[t]}) for t in targets],
        # A ticket number no entry has: the guard rejects the candidate; without it, a false hit.
        "rejected": [
            (
                texts[t].replace(f"(ticket {t})", f"(ticket {t + n})"),
                near(m[t], rng, 0.97),
                {True: None, False: texts[t]},
            )
            for t in targets
        ],
        "near_duplicate": [
            (typo(texts[t], words), near(m[t], rng, 0.92), {True: texts[t], False: None}) for t in targets
        ],
    }
    result = {}
    for kind, probes in kinds.items():
        timings = timed_lookups(caches, probes)
        for guarded, samples_s in timings.items():
            result[f"{kind}_{'guard' if guarded else 'no_guard'}"] = summary(samples_s)
    index.clear()
    writer.index.clear()
    return result


def delete_matching(client, pattern: str) -> int:
    removed, batch = 0, []
    for key in client.scan_iter(match=pattern, count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            removed += client.unlink(*batch)
            batch.clear()
    if batch:
        removed += client.unlink(*batch)
    return removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    cost = bench_guard_cost()
    print(f"Guard cost per call, best of 5 over {cost['pairs']} labelled pairs (query chars p50 {cost['chars_p50']}):")
    for name in ("prepare_us", "check_cold_us", "check_warm_us", "near_duplicate_us"):
        print(f"  {name:>18}: {cost[name]:7.2f} µs")
    client = get_redis()
    try:
        lookups = bench_lookups(client, args.entries, args.samples)
    finally:
        print(f"cleanup: {delete_matching(client, f'{keys.prefix()}*')} keys unlinked")
    print(f"\nRAGQueryCache.get at {args.entries:,} entries, {args.samples} lookups each (ms):")
    print(f"{'lookup':>16} | {'guard on p50 / p99':>19} | {'guard off p50 / p99':>20}")
    for kind in ("miss", "hit", "rejected", "near_duplicate"):
        on, off = lookups[f"{kind}_guard"], lookups[f"{kind}_no_guard"]
        print(
            f"{kind:>16} | {on['p50_ms']:>8.3f} / {on['p99_ms']:>8.3f} | {off['p50_ms']:>9.3f} / {off['p99_ms']:>8.3f}"
        )
    verdict = {
        "check_cold_us": cost["check_cold_us"],
        "lookup_p50_ms_10k": max(
            lookups[f"{k}_guard"]["p50_ms"] for k in ("miss", "hit", "rejected", "near_duplicate")
        ),
    }
    print()
    for name, value in verdict.items():
        print(f"{name:>18}: {value:.3f} (target <= {TARGETS[name]}) {'OK' if value <= TARGETS[name] else 'MISSED'}")
    print(f"unexpected answers: {len(UNEXPECTED)} {UNEXPECTED[:3]}; load average {os.getloadavg()[0]:.1f}")
    summary_line = {"guard_cost": cost, "lookups": lookups, "verdict": verdict, "unexpected": len(UNEXPECTED)}
    print(json.dumps({**summary_line, "load_average": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
