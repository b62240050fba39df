"""Similarity after Redis restarts empty (or a failover loses increments), in a long-lived process.

The process's index remembers the scope's tag. When Redis comes back with a lower
generation or epoch (its counters were lost), a lookup that read Redis after the index
had seen the higher tag resets the mirror, and rows written from then on are searchable
again. A lower tag read *before* another caller saw the higher one is only an older
reading and changes nothing. Restarts use a private redis-server on its own port.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from functools import partial

import numpy as np
import pytest
import redis as redis_lib

from cache_app.rag.cache import RAGIndex, RAGQueryCache
from cache_app.rag.cache.codec import pack_record
from cache_app.rag.cache.index import Horizon, NamespaceIndex
from tests.conftest import StaticPolicies as _StaticPolicies

MODEL = "hashed-ngram-384-v1"
DIM = 384


# Query texts here are labels, not questions: the hit guard has its own tests (test_guard*.py).
StaticPolicies = partial(_StaticPolicies, similarity_guard=False)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, seed: int, cosine: float = 0.98) -> np.ndarray:
    other = np.random.default_rng(seed).standard_normal(DIM)
    other -= other.dot(v) * v
    other /= np.linalg.norm(other)
    return cosine * v + np.sqrt(1 - cosine**2) * other


def put(cache: RAGQueryCache, query: str, vector, mp) -> bool:
    return cache.set(query, vector, [{"q": query}], embedding_model=MODEL, top_k=3, masterplan_id=mp)


def look(cache: RAGQueryCache, query: str, vector, mp):
    return cache.get(query, vector, embedding_model=MODEL, top_k=3, masterplan_id=mp)


def restart_empty(private_redis, client: redis_lib.Redis) -> None:
    """Stop and restart the server (empty), with no call in between: the breaker stays closed."""
    private_redis.stop()
    private_redis.start()
    client.connection_pool.disconnect()  # the next call reconnects instead of failing on a dead socket


@pytest.fixture
def restartable(private_redis):
    client = redis_lib.Redis.from_url(private_redis.url, socket_timeout=2, socket_connect_timeout=2)
    cache = RAGQueryCache(client, policies=StaticPolicies(), index=RAGIndex())
    yield private_redis, client, cache
    client.close()


def invalidated_scope(cache: RAGQueryCache, how: str) -> uuid.UUID:
    """A scope with a similarity hit in it, invalidated a few times before (its scope or the whole layer)."""
    mp = uuid.uuid4()
    for n in range(3):
        assert put(cache, f"before {n}", unit(100 + n), mp)
        if how == "scope":
            cache.invalidate_masterplan(mp)
        else:
            cache.invalidate_all()
    assert put(cache, "before", unit(1), mp)
    assert look(cache, "near before", near(unit(1), 2), mp).match == "similar"
    return mp


@pytest.mark.parametrize("how", ["scope", "layer"])
def test_similarity_resumes_after_an_empty_restart(restartable, how):
    private_redis, client, cache = restartable
    mp = invalidated_scope(cache, how)
    restart_empty(private_redis, client)
    assert look(cache, "near before", near(unit(1), 2), mp) is None  # the old entries are gone
    assert put(cache, "after", unit(3), mp)
    assert look(cache, "after", unit(3), mp).match == "exact"
    hit = look(cache, "near after", near(unit(3), 4), mp)
    assert hit is not None
    assert (hit.match, hit.query) == ("similar", "after")
    # Invalidation works on the restarted counters as before.
    cache.invalidate_masterplan(mp)
    assert look(cache, "near after", near(unit(3), 4), mp) is None
    assert put(cache, "after again", unit(5), mp)
    assert look(cache, "near after again", near(unit(5), 6), mp).query == "after again"


def test_similarity_resumes_for_every_thread_after_an_empty_restart(restartable):
    private_redis, client, cache = restartable
    mp = invalidated_scope(cache, "scope")
    restart_empty(private_redis, client)
    assert put(cache, "after", unit(3), mp)
    start = threading.Barrier(4)
    found: list[object] = []

    def reader(n: int) -> None:
        start.wait(timeout=10)
        found.append(look(cache, f"near after {n}", near(unit(3), 10 + n), mp))

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert [(hit.match, hit.query) for hit in found] == [("similar", "after")] * 4


async def test_async_similarity_resumes_after_an_empty_restart(restartable):
    private_redis, client, cache = restartable
    mp = invalidated_scope(cache, "scope")
    restart_empty(private_redis, client)
    await cache.aset("after", unit(3), [{"q": "after"}], embedding_model=MODEL, top_k=3, masterplan_id=mp)
    hits = await asyncio.gather(
        *(
            cache.aget(f"near after {n}", near(unit(3), 10 + n), embedding_model=MODEL, top_k=3, masterplan_id=mp)
            for n in range(3)
        )
    )
    assert [(hit.match, hit.query) for hit in hits] == [("similar", "after")] * 3


# --- the rule, on one namespace index (no Redis) -----------------------------------------------------


def load(ns: NamespaceIndex, gens: list[int]) -> np.ndarray:
    """Mirror a one-segment log (first = head = 1) holding one row per generation in ``gens``."""
    v = unit(7)
    data = b"".join(pack_record(f"{n:064x}", 10**10, 0, gen, v) for n, gen in enumerate(gens))
    horizon = Horizon(head=1, first=1)
    version, reads = ns.plan(horizon)
    assert reads == [(1, 0)]
    assert ns.load_segments(version, [(1, 0, data)], now=0.0, horizon=horizon)
    return v


def rows_found(ns: NamespaceIndex, v: np.ndarray, tag: tuple[int, int]) -> list[int]:
    return [c.row for c in ns.search(v, 0.95, now=0.0, tag=tag).candidates]


def test_a_lower_tag_read_after_the_higher_one_was_seen_restarts_the_mirror():
    ns = NamespaceIndex(DIM, max_entries=100, retention_segments=4)
    ns.observe_tag(0, 5, ns.position().reading)  # the scope was invalidated 5 times; then Redis restarted empty
    v = load(ns, [0, 0])  # rows written since, under generation 0...
    assert rows_found(ns, v, (0, 0)) == []  # ...are dead while the index believes in generation 5
    version = ns.version
    ns.observe_tag(0, 0, ns.position().reading)  # a lookup that read Redis after generation 5 was seen
    assert (ns.version, ns.tag, ns.n) == (version + 1, (0, 0), 0)  # the mirror restarts...
    load(ns, [0, 0])
    assert rows_found(ns, v, (0, 0)) == [1, 0]  # ...and rebuilds with live rows


def test_a_vanished_epoch_read_after_the_higher_one_was_seen_restarts_the_mirror():
    ns = NamespaceIndex(DIM, max_entries=100, retention_segments=4)
    ns.observe_tag(2, 0, ns.position().reading)  # invalidate_all ran twice; then the epoch key was lost
    ns.observe_tag(0, 0, ns.position().reading)
    v = load(ns, [0])
    assert rows_found(ns, v, (0, 0)) == [0]


def test_an_older_reading_than_another_callers_changes_nothing():
    ns = NamespaceIndex(DIM, max_entries=100, retention_segments=4)
    v = load(ns, [5, 6])
    slow = ns.position().reading  # this lookup read Redis first (generation 5)...
    fast = ns.position().reading
    ns.observe_tag(0, 6, fast)  # ...but another caller, which read generation 6, got here first
    version = ns.version
    ns.observe_tag(0, 5, slow)
    assert (ns.version, ns.tag) == (version, (0, 6))  # not a restart: nothing reset
    assert rows_found(ns, v, (0, 6)) == [1]
    assert rows_found(ns, v, (0, 5)) == []  # generation 5 is dead for good
