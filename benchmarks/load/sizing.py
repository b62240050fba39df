"""Redis memory per cached entry, per layer, measured (docs/operations.md "Sizing").

    .venv/bin/python benchmarks/load/sizing.py [--entries 20000]

Starts a private redis-server, writes N entries through each cache layer (LLM: a 600-character
answer; RAG: 384-dimension embeddings, 3 documents of 300 characters), and reports the growth
of Redis' ``used_memory`` per entry and per million entries. Nothing else runs on that server.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=20_000)
    args = parser.parse_args()
    from benchmarks.load.run import free_port

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        os.environ.update(
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            DJANGO_SETTINGS_MODULE="mgecache_site.settings",
            DJANGO_DEBUG="true",
            MGECACHE_IGNORE_DOTENV="1",
        )
        import django

        django.setup()
        import numpy as np
        import redis

        from cache_app.llm.cache import LLMPromptCache
        from cache_app.rag.cache import RAGIndex, RAGQueryCache
        from tests.conftest import StaticPolicies

        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        policies = StaticPolicies(ttl_seconds=86400, similarity_guard=False)
        answer = "x" * 600
        start = client.info("memory")["used_memory"]
        llm = LLMPromptCache(client, policies=policies)
        for n in range(args.entries):
            llm.set(f"prompt {n}", "claude-3-5-sonnet", 0.0, answer, prompt_tokens=100, completion_tokens=150)
        after_llm = client.info("memory")["used_memory"]
        rng = np.random.default_rng(0)
        docs = [{"content": "d" * 300, "metadata": {"source": "s"}, "score": 0.9} for _ in range(3)]
        rag = RAGQueryCache(client, policies=policies, index=RAGIndex())
        for n in range(args.entries):
            rag.set(f"query {n}", rng.standard_normal(384), docs, embedding_model="m-384", top_k=3)
        after_rag = client.info("memory")["used_memory"]
        for name, grown in (("llm", after_llm - start), ("rag", after_rag - after_llm)):
            per = grown / args.entries
            print(f"{name}: {per:,.0f} bytes/entry in Redis, {per * 1e6 / 2**30:.2f} GiB per 1M entries")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
