"""GPTCache's similarity cache on given vectors: run by benchmarks/rag_cache.py inside its own venv.

    python gptcache_bench.py VECTORS.npz OUT.json

``VECTORS.npz`` holds ``rows`` (the cached queries' unit vectors), ``hits`` (near-duplicate
queries, each at cosine >= 0.96 of row ``targets[i]``) and ``misses`` (random unit vectors).
GPTCache is set up as its docs show for a similarity cache: sqlite for the answers, faiss
(its ``IDMap,Flat`` L2 index) for the vectors, ``SearchDistanceEvaluation``; the threshold
is set to cosine 0.95 (L2^2 <= 0.1 on unit vectors). The embedding function looks the
query's vector up, so no model runs on either side. Prints nothing; writes timings to OUT.json.
"""

from __future__ import annotations

import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from gptcache import Cache, Config
from gptcache.adapter.api import get, put
from gptcache.manager import CacheBase, VectorBase, get_data_manager
from gptcache.processor.pre import get_prompt
from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

MAX_DISTANCE = 4.0
COSINE = 0.95


def main() -> None:
    data = np.load(sys.argv[1])
    rows, hits, misses, targets = data["rows"], data["hits"], data["misses"], data["targets"]
    vectors: dict[str, np.ndarray] = {f"query {i}": v for i, v in enumerate(rows)}
    vectors.update({f"hit {i}": v for i, v in enumerate(hits)})
    vectors.update({f"miss {i}": v for i, v in enumerate(misses)})

    def embed(text: str, **_: object) -> np.ndarray:
        return vectors[text]

    tmp = tempfile.mkdtemp(prefix="gptcache-bench-")
    atexit.register(shutil.rmtree, tmp, True)  # registered first, so it runs after GPTCache's own exit flush
    manager = get_data_manager(
        CacheBase("sqlite", sql_url=f"sqlite:///{tmp}/gptcache.db"),
        VectorBase("faiss", dimension=rows.shape[1], index_path=f"{tmp}/faiss.index", top_k=1),
        max_size=len(rows) * 2,
    )
    cache = Cache()
    # Score = MAX_DISTANCE - L2^2, normalised to [0, 1]; cosine 0.95 is L2^2 = 0.1.
    threshold = (MAX_DISTANCE - 2 * (1 - COSINE)) / MAX_DISTANCE
    cache.init(
        pre_embedding_func=get_prompt,
        embedding_func=embed,
        data_manager=manager,
        similarity_evaluation=SearchDistanceEvaluation(max_distance=MAX_DISTANCE),
        config=Config(similarity_threshold=threshold),
    )
    started = time.perf_counter()
    manager.import_data(
        [f"query {i}" for i in range(len(rows))],
        [f"answer {i}" for i in range(len(rows))],
        list(rows),
        [None] * len(rows),
    )
    load_s = time.perf_counter() - started
    put("query 0", "answer 0", cache_obj=cache)  # one write through the public API too

    def timed(prefix: str, n: int, expect: list[str | None]) -> tuple[list[float], int]:
        out, wrong = [], 0
        for i in range(n):
            t0 = time.perf_counter()
            answer = get(f"{prefix} {i}", cache_obj=cache)
            out.append(time.perf_counter() - t0)
            wrong += answer != expect[i]
        return out, wrong

    timed("hit", min(20, len(hits)), [f"answer {t}" for t in targets])  # warm up
    hit, hit_wrong = timed("hit", len(hits), [f"answer {t}" for t in targets])
    miss, miss_wrong = timed("miss", len(misses), [None] * len(misses))
    result = {
        "n": len(rows),
        "load_s": load_s,
        "hit_p50_ms": float(np.median(hit) * 1e3),
        "hit_p99_ms": float(np.percentile(hit, 99) * 1e3),
        "miss_p50_ms": float(np.median(miss) * 1e3),
        "miss_p99_ms": float(np.percentile(miss, 99) * 1e3),
        "wrong_answers": int(hit_wrong + miss_wrong),
        "lookups": len(hit) + len(miss),
    }
    Path(sys.argv[2]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
