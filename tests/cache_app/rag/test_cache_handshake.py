"""The miss -> set handshake of RAGQueryCache on real Redis, directly and through RAGEngine.

Each case is driven step by step first, then replayed with real threads sharing one
engine (as gunicorn threads share the process's engine), then on the async path. A
retrieval made for a dead generation must never be stored, neither as an exact entry nor
as a similarity candidate; a retrieval made after the invalidation must be.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from functools import partial

import numpy as np
import pytest

from cache_app.rag.cache import RAGIndex, RAGQueryCache
from cache_app.rag.embedders import HashedNgramEmbedder
from cache_app.rag.engine import RAGEngine
from tests.conftest import StaticPolicies as _StaticPolicies

pytestmark = pytest.mark.redis_server

EMBEDDER = HashedNgramEmbedder()
MODEL = EMBEDDER.model_name
QUERY = "How does Redis SCAN iterate keys with a cursor?"
NEAR = "how does redis scan iterate KEYS with a cursor"  # scores >= 0.95 with QUERY


# Query texts here are labels, not questions: the hit guard has its own tests (test_guard*.py).
StaticPolicies = partial(_StaticPolicies, similarity_guard=False)


@pytest.fixture
def cache(redis) -> RAGQueryCache:
    return RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())


def embed(text: str) -> np.ndarray:
    return np.asarray(EMBEDDER.embed([text])[0], dtype=np.float32)


def lookup(cache: RAGQueryCache, text: str, mp):
    return cache.lookup(text, embed(text), embedding_model=MODEL, top_k=2, masterplan_id=mp)


def put(cache: RAGQueryCache, text: str, docs: list[dict], mp, **kwargs) -> bool:
    return cache.set(text, embed(text), docs, embedding_model=MODEL, top_k=2, masterplan_id=mp, **kwargs)


def documents(cache: RAGQueryCache, text: str, mp) -> list[dict] | None:
    hit = cache.get(text, embed(text), embedding_model=MODEL, top_k=2, masterplan_id=mp)
    return None if hit is None else hit.documents


class GatedStore:
    """A document store whose searches wait for the test's go-ahead (per calling thread or task name).

    ``fail_first``: the first search raises (a store error: the miss's set never comes).
    """

    def __init__(self, *, fail_first: bool = False) -> None:
        self.arrived: dict[str, threading.Event | asyncio.Event] = {}
        self.go: dict[str, threading.Event | asyncio.Event] = {}
        self.searches = 0
        self.fail_first = fail_first

    def gate(self, name: str, *, aio: bool = False) -> None:
        event = asyncio.Event if aio else threading.Event
        self.arrived[name], self.go[name] = event(), event()

    def _answer(self, name: str) -> list[dict]:
        self.searches += 1
        if self.fail_first and self.searches == 1:
            raise RuntimeError("document store unavailable")
        return [{"content": f"retrieved by {name}", "search": self.searches}]

    def search(self, embedding, *, top_k, masterplan_id, embedding_model) -> list[dict]:
        name = threading.current_thread().name
        if name in self.go:
            self.arrived[name].set()
            assert self.go[name].wait(timeout=10)
        return self._answer(name)

    async def asearch(self, embedding, *, top_k, masterplan_id, embedding_model) -> list[dict]:
        name = asyncio.current_task().get_name()
        if name in self.go:
            self.arrived[name].set()
            await asyncio.wait_for(self.go[name].wait(), timeout=10)
        return self._answer(name)


def engine_on(cache: RAGQueryCache, store: GatedStore) -> RAGEngine:
    return RAGEngine(embedder=EMBEDDER, store=store, cache=cache)


# --- 1. two misses of one key in one instance, then an invalidation: neither retrieval is stored -----


@pytest.mark.parametrize("first", ["A", "B"])
def test_two_misses_then_an_invalidation_store_neither_retrieval(cache, first):
    mp = uuid.uuid4()
    a, b = lookup(cache, QUERY, mp), lookup(cache, QUERY, mp)
    assert (a.hit, b.hit) == (None, None)
    assert a.token is not None
    assert a.token == b.token
    cache.invalidate_masterplan(mp)
    tokens = {"A": a.token, "B": b.token}
    second = "B" if first == "A" else "A"
    assert put(cache, QUERY, [{"by": first}], mp, token=tokens[first]) is False
    assert put(cache, QUERY, [{"by": second}], mp, token=tokens[second]) is False
    assert lookup(cache, QUERY, mp).hit is None  # no exact entry...
    assert lookup(cache, NEAR, mp).hit is None  # ...and no similarity candidate
    fresh = lookup(cache, QUERY, mp)
    assert put(cache, QUERY, [{"by": "fresh"}], mp, token=fresh.token) is True
    assert documents(cache, NEAR, mp) == [{"by": "fresh"}]


def test_two_engine_threads_never_store_a_retrieval_made_before_an_invalidation(cache):
    mp = uuid.uuid4()
    store = GatedStore()
    engine = engine_on(cache, store)
    threads = {}
    for name in ("A", "B"):
        store.gate(name)
        threads[name] = threading.Thread(target=engine.query, args=(QUERY,), kwargs={"top_k": 2, "masterplan_id": mp})
        threads[name].name = name
        threads[name].start()
        assert store.arrived[name].wait(timeout=10)  # this thread missed and is searching the store
    cache.invalidate_masterplan(mp)  # the documents changed while both searched
    for name in ("A", "B"):
        store.go[name].set()
        threads[name].join(timeout=10)
    assert engine.query(NEAR, top_k=2, masterplan_id=mp).cached is False  # nothing stale, not even similar
    again = engine.query(QUERY, top_k=2, masterplan_id=mp)  # the retrieval made just now is cached
    assert (again.match, again.documents) == ("similar", [{"content": "retrieved by MainThread", "search": 3}])


async def test_two_engine_tasks_never_store_a_retrieval_made_before_an_invalidation(cache):
    mp = uuid.uuid4()
    store = GatedStore()
    engine = engine_on(cache, store)
    tasks = {}
    for name in ("A", "B"):
        store.gate(name, aio=True)
        tasks[name] = asyncio.create_task(engine.aquery(QUERY, top_k=2, masterplan_id=mp), name=name)
        await asyncio.wait_for(store.arrived[name].wait(), timeout=10)
    await cache.ainvalidate_masterplan(mp)
    for name in ("A", "B"):
        store.go[name].set()
        await tasks[name]
    assert (await engine.aquery(NEAR, top_k=2, masterplan_id=mp)).cached is False
    assert (await engine.aquery(QUERY, top_k=2, masterplan_id=mp)).match == "similar"  # the fresh one is cached


# --- 3. a fresh retrieval after an invalidation is stored ---------------------------------------------


def test_a_miss_whose_set_never_came_does_not_refuse_a_later_fresh_retrieval(cache):
    mp = uuid.uuid4()
    lookup(cache, QUERY, mp)  # the store failed: no set follows
    cache.invalidate_masterplan(mp)
    fresh = lookup(cache, QUERY, mp)
    assert put(cache, QUERY, [{"by": "fresh"}], mp, token=fresh.token) is True
    assert documents(cache, QUERY, mp) == [{"by": "fresh"}]


def test_a_set_without_a_preceding_miss_writes_under_the_current_tag(cache):
    mp = uuid.uuid4()
    assert documents(cache, QUERY, mp) is None  # a miss whose set never comes
    cache.invalidate_masterplan(mp)
    stored = put(cache, QUERY, [{"by": "warm-up"}], mp)  # no token: whatever tag is current
    assert documents(cache, NEAR, mp) == [{"by": "warm-up"}]
    assert stored is True


def test_the_engine_caches_the_first_retrieval_after_a_failed_search_and_an_invalidation(cache):
    mp = uuid.uuid4()
    engine = engine_on(cache, GatedStore(fail_first=True))
    with pytest.raises(RuntimeError):
        engine.query(QUERY, top_k=2, masterplan_id=mp)
    cache.invalidate_masterplan(mp)
    assert engine.query(QUERY, top_k=2, masterplan_id=mp).cached is False
    again = engine.query(QUERY, top_k=2, masterplan_id=mp)
    assert (again.cached, again.match) == (True, "exact")


def test_engine_threads_whose_misses_saw_the_current_generation_store_their_retrieval(cache):
    mp = uuid.uuid4()
    store = GatedStore()
    engine = engine_on(cache, store)
    lookup(cache, QUERY, mp)  # abandoned before the invalidation
    cache.invalidate_masterplan(mp)
    threads = []
    for name in ("A", "B"):
        store.gate(name)
        thread = threading.Thread(target=engine.query, args=(QUERY,), kwargs={"top_k": 2, "masterplan_id": mp})
        thread.name = name
        thread.start()
        threads.append(thread)
        assert store.arrived[name].wait(timeout=10)
    for name, thread in zip(("A", "B"), threads, strict=True):
        store.go[name].set()
        thread.join(timeout=10)
    assert engine.query(QUERY, top_k=2, masterplan_id=mp).documents == [{"content": "retrieved by B", "search": 2}]


async def test_the_async_engine_caches_the_first_retrieval_after_a_failed_search_and_an_invalidation(cache):
    mp = uuid.uuid4()
    engine = engine_on(cache, GatedStore(fail_first=True))
    with pytest.raises(RuntimeError):
        await engine.aquery(QUERY, top_k=2, masterplan_id=mp)
    await cache.ainvalidate_masterplan(mp)
    assert (await engine.aquery(QUERY, top_k=2, masterplan_id=mp)).cached is False
    assert (await engine.aquery(NEAR, top_k=2, masterplan_id=mp)).match == "similar"


def test_a_token_of_another_entry_is_rejected(cache):
    token = lookup(cache, QUERY, None).token
    with pytest.raises(ValueError, match="another entry"):
        put(cache, NEAR, [], None, token=token)
