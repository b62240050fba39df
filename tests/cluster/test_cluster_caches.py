"""The cache layers on a real Redis Cluster: hits, similar hits, invalidation, reclaim, statistics.

Masterplans are chosen so that their keys land on each of the three primaries; everything one
lookup, write or invalidation touches shares the scope's hash tag, so it runs in one slot.
"""

from __future__ import annotations

import asyncio
from functools import partial

import numpy as np
import pytest

from cache_app.console.census import LiveEntryCensus
from cache_app.core import keys, retired
from cache_app.core.cluster import CacheCluster, ThreadedCluster, node_clients
from cache_app.core.counters import get_counters
from cache_app.core.redis_client import get_async_redis, get_redis
from cache_app.llm.cache import LLMPromptCache
from cache_app.rag.cache import RAGIndex, RAGQueryCache
from tests.cluster.conftest import masterplans_per_primary
from tests.conftest import StaticPolicies as _StaticPolicies

pytestmark = [pytest.mark.slow]
StaticPolicies = partial(_StaticPolicies, similarity_guard=False)
MODEL = "hashed-ngram-64-v1"
DIM = 64


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM)
    return v / np.linalg.norm(v)


def near(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    other = rng.standard_normal(DIM)
    other -= other.dot(base) * base
    other /= np.linalg.norm(other)
    return cosine * base + np.sqrt(1.0 - cosine**2) * other


def keys_on_every_node(pattern: str) -> dict[int, int]:
    """Keys matching ``pattern`` per primary (by port)."""
    return {
        node.connection_pool.connection_kwargs["port"]: sum(1 for _ in node.scan_iter(match=pattern, count=1000))
        for node in node_clients(get_redis())
    }


@pytest.fixture
def spread(on_cluster) -> dict[int, str]:
    return masterplans_per_primary(on_cluster)


def test_the_configured_clients_are_the_cluster(on_cluster):
    assert isinstance(get_redis(), CacheCluster)

    async def client_type() -> type:
        return type(get_async_redis())

    assert asyncio.run(client_type()) is ThreadedCluster


def test_exact_hits_sync_and_async_on_every_node(on_cluster, spread):
    cache = LLMPromptCache(policies=StaticPolicies())
    for port, mp in spread.items():
        assert cache.set("q", "m", 0.0, f"answer {port}", prompt_tokens=1, completion_tokens=1, masterplan_id=mp)
    for port, mp in spread.items():
        assert cache.get("q", "m", 0.0, masterplan_id=mp).text == f"answer {port}"

    async def read_all() -> list[str]:
        found = await asyncio.gather(*(cache.aget("q", "m", 0.0, masterplan_id=mp) for mp in spread.values()))
        return [hit.text for hit in found]

    assert asyncio.run(read_all()) == [f"answer {port}" for port in spread]
    per_node = keys_on_every_node(f"{keys.prefix()}llm:{{*")
    assert all(per_node[port] >= 1 for port in spread)  # the entries really are on three nodes


def test_similar_hits_and_the_sharded_log(on_cluster, spread):
    rng = np.random.default_rng(7)
    writer = RAGQueryCache(policies=StaticPolicies(), index=RAGIndex())
    vectors = {}
    for port, mp in spread.items():
        vectors[port] = unit(rng)
        docs = [{"content": f"doc {port}", "metadata": {}, "score": 0.9}]
        assert writer.set(f"query {port}", vectors[port], docs, embedding_model=MODEL, top_k=3, masterplan_id=mp)
    reader = RAGQueryCache(policies=StaticPolicies(), index=RAGIndex())  # another process's empty index
    for port, mp in spread.items():
        exact = reader.get(f"query {port}", vectors[port], embedding_model=MODEL, top_k=3, masterplan_id=mp)
        assert exact is not None
        assert exact.documents[0]["content"] == f"doc {port}"
        similar = reader.get(
            f"other words {port}", near(vectors[port], 0.99, rng), embedding_model=MODEL, top_k=3, masterplan_id=mp
        )
        assert similar is not None
        assert similar.match == "similar"
        assert similar.documents[0]["content"] == f"doc {port}"


def test_invalidation_and_reclaim_across_nodes(on_cluster, spread):
    cache = LLMPromptCache(policies=StaticPolicies())
    ports = list(spread)
    for mp in spread.values():
        for i in range(5):
            cache.set(f"q{i}", "m", 0.0, "a", prompt_tokens=1, completion_tokens=1, masterplan_id=mp)
    first = spread[ports[0]]
    assert cache.invalidate_masterplan(first) == 5  # inline reclaim on the node of that scope
    assert cache.get("q0", "m", 0.0, masterplan_id=first) is None
    for port in ports[1:]:
        assert cache.get("q0", "m", 0.0, masterplan_id=spread[port]).text == "a"
    assert cache.invalidate_all() == 10  # every slot's epoch copy moved; reclaim scans every primary
    for mp in spread.values():
        assert cache.get("q1", "m", 0.0, masterplan_id=mp) is None
    assert sum(keys_on_every_node(f"{keys.prefix()}llm:{{*").values()) == 0
    # The caches work at once after a layer invalidation.
    assert cache.set("q", "m", 0.0, "fresh", prompt_tokens=1, completion_tokens=1, masterplan_id=first)
    assert cache.get("q", "m", 0.0, masterplan_id=first).text == "fresh"


def test_rag_invalidation_and_reclaim(on_cluster, spread):
    rng = np.random.default_rng(3)
    cache = RAGQueryCache(policies=StaticPolicies(), index=RAGIndex())
    docs = [{"content": "d", "metadata": {}, "score": 0.5}]
    stored = {mp: unit(rng) for mp in spread.values()}
    for mp, vector in stored.items():
        cache.set("q", vector, docs, embedding_model=MODEL, top_k=3, masterplan_id=mp)
    assert cache.invalidate_all() == len(spread)
    for mp, vector in stored.items():
        assert cache.get("q", vector, embedding_model=MODEL, top_k=3, masterplan_id=mp) is None


def test_statistics_and_census_cover_every_node(on_cluster, spread):
    cache = LLMPromptCache(policies=StaticPolicies())
    for mp in spread.values():
        cache.set("q", "m", 0.0, "a", prompt_tokens=1, completion_tokens=1, masterplan_id=mp)
        assert cache.get("q", "m", 0.0, masterplan_id=mp) is not None
        assert cache.get("absent", "m", 0.0, masterplan_id=mp) is None
    get_counters().flush()
    for mp in spread.values():
        assert cache.stats(mp)["hits"] == 1
        assert cache.stats(mp)["misses"] == 1
        assert keys.parse_stats_scope(keys.stats("llm", mp), "llm") == mp
    assert cache.stats()["hits"] == len(spread)
    census = LiveEntryCensus(get_redis()).run()
    assert census.complete
    assert {mp: census.count("llm", mp) for mp in spread.values()} == dict.fromkeys(spread.values(), 1)


def test_retired_keys_are_reclaimed_on_every_node(on_cluster, spread):
    client = get_redis()
    old = [f"{retired.retired_prefixes()[0]}llm:{mp}:{'0' * 64}" for mp in spread.values()]
    for key in old:
        client.set(key, "e0g0|old")
    current = keys.llm_entry(None, "1" * 64)
    client.set(current, "e0g0|new")
    assert retired.reclaim_retired_keys(client) == len(old)
    assert not any(client.exists(key) for key in old)
    assert client.exists(current)


def test_single_flight_across_callers_on_the_cluster(on_cluster):
    """Two processes' worth of callers (two SingleFlight objects) make one call; the lock is released after."""
    from prometheus_client import REGISTRY

    from cache_app.llm.singleflight import SingleFlight

    calls = []

    def waiters() -> float:
        return REGISTRY.get_sample_value("mgecache_singleflight_waiters_total", {"scope": "redis"}) or 0.0

    async def both() -> list[str]:
        started = waiters()

        async def work() -> str:
            calls.append(1)
            while waiters() == started:  # the leader answers once the other caller waits on it in Redis
                await asyncio.sleep(0.01)
            return "answer"

        first = SingleFlight(encode=lambda v: v, decode=lambda v: v)
        second = SingleFlight(encode=lambda v: v, decode=lambda v: v)
        return list(await asyncio.wait_for(asyncio.gather(first.run("k", work), second.run("k", work)), 30))

    assert asyncio.run(both()) == ["answer", "answer"]
    assert len(calls) == 1
    assert not get_redis().exists(keys.singleflight_lock("k"))
