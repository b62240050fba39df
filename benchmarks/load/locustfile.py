"""The load test's traffic (locust, headless): 70% LLM hits, 20% misses, 10% RAG queries, a few waves.

Hits cycle through the prompts the runner warmed (``LOAD_HIT_PROMPTS`` per masterplan); a miss is a
prompt never sent before (the simulated provider answers it); RAG queries cycle through a small set,
so after the first round they are cache hits too. Each request names its kind, so locust reports
p50/p99 per kind. Environment: LOAD_API_KEY, LOAD_MASTERPLANS (comma-separated), LOAD_HIT_PROMPTS.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid

from locust import FastHttpUser, constant, task

from benchmarks.load.pacing import on_schedule

KEY = os.environ["LOAD_API_KEY"]
MASTERPLANS = os.environ["LOAD_MASTERPLANS"].split(",")
HIT_PROMPTS = int(os.environ.get("LOAD_HIT_PROMPTS", "50"))
# Task weights: LLM hits, LLM misses, RAG queries, waves (LOAD_MIX; the mix by default).
MIX = [int(weight) for weight in os.environ.get("LOAD_MIX", "70,20,10,1").split(",")]
RAG_QUERIES = [f"what does clause {n} of the supply contract say" for n in range(20)]
_counter = itertools.count()
# Where misses, RAG queries and waves go (run.py --split-nice: a pool of their own); by default the host.
REST = os.environ.get("LOAD_REST_HOST", "")
# Open loop (run.py --rate): each user starts a request every 1/rate s, however long the last took (a
# user behind schedule starts at once, and again, until it is back on schedule); 0, the default: closed
# loop, the next request when one returns.
USER_RATE = float(os.environ.get("LOAD_USER_RATE", "0"))


def hit_prompt(masterplan: str, n: int) -> str:
    return f"load test prompt {n} of {masterplan}"


class Pipeline(FastHttpUser):
    wait_time = on_schedule(USER_RATE) if USER_RATE else constant(0)

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def _post(self, path: str, body: dict, name: str) -> None:
        with self.client.post(path, json=body, headers=self.headers, name=name, catch_response=True) as response:
            if response.status_code not in (200, 202):
                response.failure(f"HTTP {response.status_code}")

    @task(MIX[0])
    def llm_hit(self) -> None:
        mp = random.choice(MASTERPLANS)
        body = {"prompt": hit_prompt(mp, random.randrange(HIT_PROMPTS)), "temperature": 0, "masterplan_id": mp}
        self._post("/api/v2/llm/generate", body, "llm hit")

    @task(MIX[1])
    def llm_miss(self) -> None:
        mp = random.choice(MASTERPLANS)
        prompt = f"fresh prompt {uuid.uuid4().hex} {next(_counter)}"
        body = {"prompt": prompt, "temperature": 0, "masterplan_id": mp}
        self._post(f"{REST}/api/v2/llm/generate", body, "llm miss")

    @task(MIX[2])
    def rag_query(self) -> None:
        body = {"query": random.choice(RAG_QUERIES), "top_k": 3, "masterplan_id": random.choice(MASTERPLANS)}
        self._post(f"{REST}/api/v2/rag/query", body, "rag query")

    @task(MIX[3])
    def wave(self) -> None:
        atoms = [{"atom_id": str(uuid.uuid4()), "prompt": f"wave atom {uuid.uuid4().hex}"} for _ in range(4)]
        body = {"masterplan_id": random.choice(MASTERPLANS), "atoms": atoms, "defaults": {"temperature": 0}}
        self._post(f"{REST}/api/v2/llm/waves", body, "wave")
