"""One process of the cache stress test (tests/cache_app/test_stress.py).

Several threads share one LLMPromptCache and one RAGQueryCache (as gunicorn threads share
a worker's caches) on a private redis-server, and race lookups, writes and invalidations
of a few scopes that every process uses. Every answer a thread computes records what it
was computed for: the scope's (epoch, generation) as read from Redis after the miss, and
the server's run id (``boot``). The oracle then checks every hit against the scope's state
read just before the lookup, and every refused write against the state just after it.

    python -m tests.cache_app.stress_worker --url redis://127.0.0.1:PORT/0 --scopes A,B --seed 1

Prints ``warm`` once warmed up, keeps running through the parent's restart of the
server, and ends ``--after-seconds`` after it saw the restart, with one JSON report line.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import redis

MODEL = "claude-3-5-sonnet"
EMBEDDING_MODEL = "stress-64"
DIM = 64
THRESHOLD = 0.95
PROMPTS = 8  # per scope: few keys, so concurrent misses of one key are common
BASES = 8  # RAG base vectors per scope
VARIANTS = 4  # per base: the base query itself and three near-duplicates (cosine 0.975)
INVALIDATE = 0.02  # share of operations that invalidate a scope
UPSTREAM_SECONDS = 0.003  # the simulated LLM call / document search takes up to this long
_TAG = re.compile(rb"e(\d+)g(\d+)\|")


@dataclass(frozen=True)
class State:
    epoch: int
    gen: int
    boot: str


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.exceptions: list[str] = []
        self.first_similar_after_restart: float | None = None

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n


def vectors(scopes: list[str]) -> dict[tuple[str, int, int], np.ndarray]:
    """The same unit vectors in every process: (scope, base, variant) -> vector."""
    out = {}
    for s, scope in enumerate(scopes):
        for i in range(BASES):
            base = np.random.default_rng(1000 + 100 * s + i).standard_normal(DIM)
            base /= np.linalg.norm(base)
            out[(scope, i, 0)] = base
            for v in range(1, VARIANTS):
                other = np.random.default_rng(5000 + 1000 * s + 10 * i + v).standard_normal(DIM)
                other -= other.dot(base) * base
                other /= np.linalg.norm(other)
                out[(scope, i, v)] = 0.975 * base + np.sqrt(1 - 0.975**2) * other
    return out


class Worker:
    def __init__(self, url: str, scopes: list[str], seed: int) -> None:
        from cache_app.core import keys
        from cache_app.core.policies import LayerPolicy
        from cache_app.core.redis_client import CircuitBreaker
        from cache_app.llm.cache import LLMPromptCache
        from cache_app.rag.cache import RAGIndex, RAGQueryCache

        class Policies:
            def llm(self) -> LayerPolicy:
                return LayerPolicy(layer="llm", ttl_seconds=600)

            def rag(self) -> LayerPolicy:
                return LayerPolicy(
                    layer="rag", ttl_seconds=600, similarity_threshold=THRESHOLD, similarity_guard=False
                )  # labels, not questions

        self.keys = keys
        self.client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self.truth_client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        self.breaker = CircuitBreaker(
            probe=self.client.ping, failure_threshold=1, reset_seconds=0.05, name=f"stress-{seed}"
        )
        self.llm = LLMPromptCache(self.client, policies=Policies(), breaker=self.breaker)
        self.rag = RAGQueryCache(self.client, policies=Policies(), breaker=self.breaker, index=RAGIndex())
        self.scopes = scopes
        self.seed = seed
        self.vectors = vectors(scopes)
        self.boot_key = f"{keys.prefix()}stress:boot"
        self.stats = Stats()
        self.stop = threading.Event()
        self.restarted = threading.Event()
        self.first_boot: str | None = None

    # --- the oracle's view of Redis (never through the caches) -----------------------------------
    def truth(self, layer: str, scope: str) -> State | None:
        k = self.keys
        epoch_key, gen_key = (
            (k.llm_epoch(scope), k.llm_generation(scope))
            if layer == "llm"
            else (k.rag_epoch(scope), k.rag_generation(scope))
        )
        try:
            epoch, gen, boot = self.truth_client.mget(epoch_key, gen_key, self.boot_key)
            if boot is None:  # a new server: name it by its run id (every process agrees)
                run_id = self.truth_client.info("server")["run_id"]
                self.truth_client.set(self.boot_key, run_id, nx=True)
                boot = self.truth_client.get(self.boot_key)
        except (redis.RedisError, OSError):
            return None  # the server is down or restarting: this operation is not judged
        state = State(int(epoch or 0), int(gen or 0), boot.decode())
        if self.first_boot is None:
            self.first_boot = state.boot
        elif state.boot != self.first_boot and not self.restarted.is_set():
            self.restarted.set()
        return state

    @staticmethod
    def computed_for(state: State, scope: str) -> dict[str, Any]:
        return {"s": scope, "e": state.epoch, "g": state.gen, "b": state.boot}

    @staticmethod
    def stale(answer: dict[str, Any], before: State) -> bool:
        """Computed for an older generation than the scope's current one before the lookup began."""
        return answer["b"] != before.boot or answer["e"] < before.epoch or answer["g"] < before.gen

    @staticmethod
    def set_errors(layer: str) -> float:
        """Failed or skipped writes of the layer, in this process (a Redis error, or the breaker open)."""
        from prometheus_client import REGISTRY

        labels = {"cache_layer": layer, "operation": "set"}
        return REGISTRY.get_sample_value("mgecache_cache_errors_total", labels) or 0.0

    def judge_refusal(self, layer: str, token: Any, before: State, scope: str, errors_before: float) -> None:
        """A write that was not stored: refused by the handshake, or Redis was unavailable."""
        after = self.truth(layer, scope)
        if self.set_errors(layer) != errors_before or after is None or after.boot != before.boot:
            self.stats.add(f"{layer}_unavailable_writes")  # Redis failed during the window: not judged
            return
        self.stats.add(f"{layer}_refused")
        match = _TAG.fullmatch(token.tag)
        if (int(match.group(1)), int(match.group(2))) == (after.epoch, after.gen):
            self.stats.add(f"{layer}_refused_fresh")  # no invalidation between the miss and the set

    # --- operations -------------------------------------------------------------------------------
    def upstream(self, rng: random.Random) -> None:
        """The upstream's latency (a workload, like the stub LLM server's delay): invalidations land meanwhile."""
        self.stop.wait(rng.uniform(0, UPSTREAM_SECONDS))

    def llm_op(self, rng: random.Random, scope: str) -> None:
        prompt = f"prompt {rng.randrange(PROMPTS)}"
        before = self.truth("llm", scope)
        if before is None:
            return
        found = self.llm.lookup(prompt, MODEL, 0, masterplan_id=scope)
        self.stats.add("llm_lookups")
        if found.hit is not None:
            answer = json.loads(found.hit.text)
            if answer["s"] != scope or answer["p"] != prompt:
                self.stats.add("llm_wrong")
            elif self.stale(answer, before):
                self.stats.add("llm_stale_hits")
            else:
                self.stats.add("llm_hits")
            return
        computed = self.truth("llm", scope)  # the "LLM call": its answer reflects the state it read...
        if found.token is None or computed is None:
            return
        self.upstream(rng)  # ...and takes a while
        text = json.dumps({**self.computed_for(computed, scope), "p": prompt})
        errors_before = self.set_errors("llm")
        stored = self.llm.set(
            prompt, MODEL, 0, text, prompt_tokens=1, completion_tokens=1, masterplan_id=scope, token=found.token
        )
        if stored:
            self.stats.add("llm_writes")
        else:
            self.judge_refusal("llm", found.token, before, scope, errors_before)

    def rag_op(self, rng: random.Random, scope: str) -> None:
        base, variant = rng.randrange(BASES), rng.randrange(VARIANTS)
        query = f"q{base}" if variant == 0 else f"q{base}~{variant}"
        vector = self.vectors[(scope, base, variant)]
        before = self.truth("rag", scope)
        if before is None:
            return
        found = self.rag.lookup(query, vector, embedding_model=EMBEDDING_MODEL, top_k=3, masterplan_id=scope)
        self.stats.add("rag_lookups")
        if found.hit is not None:
            self.judge_rag_hit(found.hit, query, vector, scope, before)
            return
        computed = self.truth("rag", scope)  # the "document search"
        if found.token is None or computed is None:
            return
        self.upstream(rng)
        documents = [{**self.computed_for(computed, scope), "i": base}]
        errors_before = self.set_errors("rag")
        stored = self.rag.set(
            query, vector, documents, embedding_model=EMBEDDING_MODEL, top_k=3, masterplan_id=scope, token=found.token
        )
        if stored:
            self.stats.add("rag_writes")
        else:
            self.judge_refusal("rag", found.token, before, scope, errors_before)

    def judge_rag_hit(self, hit: Any, query: str, vector: np.ndarray, scope: str, before: State) -> None:
        answer = hit.documents[0]
        stored = np.asarray(hit.query_embedding, dtype=np.float64)
        cosine = float(stored.dot(vector) / np.linalg.norm(stored))
        if answer["s"] != scope or (hit.match == "exact" and hit.query != query):
            self.stats.add("rag_wrong")
        elif hit.similarity < THRESHOLD or cosine < THRESHOLD - 1e-4:
            self.stats.add("rag_below_threshold")
        elif self.stale(answer, before):
            self.stats.add("rag_stale_hits")
        elif hit.match == "exact":
            self.stats.add("rag_exact_hits")
        else:
            self.stats.add("rag_similar_hits")
            if before.boot != self.first_boot:
                self.stats.add("rag_similar_hits_after_restart")
                with self.stats.lock:
                    if self.stats.first_similar_after_restart is None:
                        self.stats.first_similar_after_restart = time.time()

    def invalidate(self, rng: random.Random, scope: str) -> None:
        from cache_app.core.layer import CacheUnavailableError

        cache = self.llm if rng.random() < 0.5 else self.rag
        try:
            cache.invalidate_masterplan(scope, reclaim="inline" if rng.random() < 0.2 else "none")
        except CacheUnavailableError:
            self.stats.add("invalidations_unavailable")
            return
        phase = "after" if self.restarted.is_set() else "before"
        self.stats.add(f"{cache.layer}_invalidations_{phase}_restart")

    def run_thread(self, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        while not self.stop.is_set():
            scope = rng.choice(self.scopes)
            roll = rng.random()
            try:
                if roll < INVALIDATE:
                    self.invalidate(rng, scope)
                elif roll < 0.5:
                    self.llm_op(rng, scope)
                else:
                    self.rag_op(rng, scope)
            except Exception:  # nothing may reach a caller: every one is a failure of the test
                with self.stats.lock:
                    if len(self.stats.exceptions) < 5:
                        self.stats.exceptions.append(traceback.format_exc())
                self.stats.add("exceptions")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--scopes", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--warm-seconds", type=float, default=6.0)
    parser.add_argument("--after-seconds", type=float, default=6.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()

    import django

    django.setup()
    worker = Worker(args.url, args.scopes.split(","), args.seed)
    started = time.time()
    threads = [threading.Thread(target=worker.run_thread, args=(n,), daemon=True) for n in range(args.threads)]
    for thread in threads:
        thread.start()
    worker.stop.wait(args.warm_seconds)  # the workload runs; this thread only paces the phases
    print("warm", flush=True)
    seen = worker.restarted.wait(max(0.0, args.max_seconds - (time.time() - started)))
    restart_seen_at = time.time() if seen else None
    worker.stop.wait(args.after_seconds)
    worker.stop.set()
    for thread in threads:
        thread.join(timeout=30)
    report = {
        "seed": args.seed,
        "threads": args.threads,
        "seconds": time.time() - started,
        "counts": dict(worker.stats.counts),
        "exceptions": worker.stats.exceptions,
        "restart_seen_at": restart_seen_at,
        "first_similar_after_restart": worker.stats.first_similar_after_restart,
        "threads_alive": sum(t.is_alive() for t in threads),
    }
    print(json.dumps(report), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
