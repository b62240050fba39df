"""RAGQueryCache: exact and similar hits, namespaces, expiry, invalidation, bad input, metrics, async twins.

Runs on the configured Redis (real in CI, fakeredis otherwise). Cross-process mirroring,
rebuilds on a real server, outages and the no-SCAN proof: test_rag_cache_resilience.py.
"""

from __future__ import annotations

import time
import uuid
from functools import partial

import msgpack
import numpy as np
import pytest
from prometheus_client import REGISTRY

from cache_app.core import keys
from cache_app.core.policies import DatabasePolicySource
from cache_app.models import CachePolicy
from cache_app.rag.cache import CachedRAGResult, RAGIndex, RAGQueryCache
from cache_app.tasks import reclaim_rag_dead_keys, reclaim_rag_masterplan
from tests.conftest import StaticPolicies as _StaticPolicies

# Query texts here are labels, not questions: the hit guard has its own tests (test_guard*.py).
StaticPolicies = partial(_StaticPolicies, similarity_guard=False)

MODEL = "hashed-ngram-384-v1"
DIM = 384
DOCS = [{"content": "Paris is the capital of France.", "metadata": {"source": "atlas", "page": 3}, "score": 0.91}]


def sample(name: str, layer: str = "rag", **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"cache_layer": layer, **labels}) or 0.0


def unit(rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal(dim)
    return v / np.linalg.norm(v)


def at_cosine(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine with the unit vector ``base`` is exactly ``cosine`` (up to rounding)."""
    other = rng.standard_normal(base.shape[0])
    other -= other.dot(base) * base
    other /= np.linalg.norm(other)
    return cosine * base + np.sqrt(1.0 - cosine**2) * other


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def cache(redis) -> RAGQueryCache:
    return RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())


def put(cache: RAGQueryCache, query: str, vector, docs=None, **kwargs) -> bool:
    kwargs.setdefault("embedding_model", MODEL)
    kwargs.setdefault("top_k", 5)
    return cache.set(query, vector, DOCS if docs is None else docs, **kwargs)


def look(cache: RAGQueryCache, query: str, vector, **kwargs) -> CachedRAGResult | None:
    kwargs.setdefault("embedding_model", MODEL)
    kwargs.setdefault("top_k", 5)
    return cache.get(query, vector, **kwargs)


# --- exact and similar hits -----------------------------------------------------------------


def test_exact_hit_returns_what_was_stored_and_a_miss_is_none(cache, rng):
    v = unit(rng)
    assert look(cache, "capital of France?", v) is None
    put(cache, "capital of France?", v)
    hit = look(cache, "capital of France?", v)
    assert hit.match == "exact"
    assert hit.similarity == 1.0
    assert hit.query == "capital of France?"
    assert hit.documents == DOCS
    assert np.allclose(hit.query_embedding, v, atol=1e-6)
    assert abs(hit.cached_at - time.time()) < 60
    # An exact hit does not depend on the vector sent with the lookup.
    assert look(cache, "capital of France?", unit(rng)).match == "exact"


def test_threshold_boundary_just_below_misses_just_above_hits(cache, rng):
    base = unit(rng)
    put(cache, "stored query", base)
    below = look(cache, "a different query", at_cosine(base, 0.949, rng))
    assert below is None
    above = look(cache, "another different query", at_cosine(base, 0.951, rng))
    assert above is not None
    assert above.match == "similar"
    assert above.query == "stored query"
    assert above.documents == DOCS
    assert 0.9505 < above.similarity < 0.9515


@pytest.mark.django_db
def test_threshold_comes_live_from_the_policy(redis, rng):
    cache = RAGQueryCache(redis, policies=DatabasePolicySource(refresh_seconds=0), index=RAGIndex())
    base = unit(rng)
    put(cache, "stored", base)
    probe = at_cosine(base, 0.93, rng)
    assert look(cache, "probe", probe) is None  # the seeded default threshold is 0.95
    CachePolicy.objects.filter(layer="rag").update(similarity_threshold=0.9, ttl_seconds=120)
    assert look(cache, "probe", probe).similarity == pytest.approx(0.93, abs=1e-4)
    put(cache, "short-lived", unit(rng))
    assert 110 < redis.ttl(keys.rag_entry(None, keys.rag_entry_digest("short-lived", MODEL, 5))) <= 120


def test_the_best_match_wins_over_the_first_match(cache, rng):
    q = unit(rng)
    for name, cosine in (("first, good enough", 0.96), ("best", 0.99), ("last, good enough", 0.97)):
        put(cache, name, at_cosine(q, cosine, rng))
    for _ in range(50):  # unrelated entries around them
        put(cache, f"noise {_}", unit(rng))
    hit = look(cache, "query", q)
    assert hit.query == "best"
    assert hit.similarity == pytest.approx(0.99, abs=1e-4)


@pytest.mark.parametrize("order", [("older", "newer"), ("newer", "older")])
def test_ties_go_to_the_most_recent_entry(cache, rng, order):
    v = unit(rng)
    first, second = order
    put(cache, first, v, docs=[{"who": first}])
    put(cache, second, v, docs=[{"who": second}])
    hit = look(cache, "tie breaker", at_cosine(v, 0.98, rng))
    assert hit.query == second
    assert hit.documents == [{"who": second}]


def test_nothing_matches_across_embedding_model_top_k_or_masterplan(cache, rng):
    v, mp, other_mp = unit(rng), uuid.uuid4(), uuid.uuid4()
    put(cache, "q", v, embedding_model="model-a", top_k=5, masterplan_id=mp)
    near = at_cosine(v, 0.999, rng)
    for kwargs in (
        {"embedding_model": "model-b", "top_k": 5, "masterplan_id": mp},
        {"embedding_model": "model-a", "top_k": 6, "masterplan_id": mp},
        {"embedding_model": "model-a", "top_k": 5, "masterplan_id": other_mp},
        {"embedding_model": "model-a", "top_k": 5, "masterplan_id": None},
    ):
        assert look(cache, "q", v, **kwargs) is None, kwargs  # not even the exact query
        assert look(cache, "q2", near, **kwargs) is None, kwargs
    assert look(cache, "q", v, embedding_model="model-a", top_k=5, masterplan_id=str(mp).upper()).match == "exact"
    assert look(cache, "q2", near, embedding_model="model-a", top_k=5, masterplan_id=mp).match == "similar"


def test_a_namespace_rejects_vectors_of_another_dimension(cache, rng):
    put(cache, "q", unit(rng, 64))
    with pytest.raises(ValueError, match="64-dimension"):
        look(cache, "q", unit(rng, 32))
    with pytest.raises(ValueError, match="64-dimension"):
        put(cache, "other", unit(rng, 32))
    # Another namespace may use another dimension.
    put(cache, "other", unit(rng, 32), embedding_model="small-model")
    assert look(cache, "other", unit(rng, 32), embedding_model="small-model").match == "exact"


def test_numpy_float64_float32_and_lists_are_accepted(cache, rng):
    v64 = unit(rng).astype(np.float64)
    put(cache, "from float64", v64)
    hit = look(cache, "float32 lookup", at_cosine(v64, 0.99, rng).astype(np.float32))
    assert hit.match == "similar"
    assert hit.query == "from float64"
    assert all(isinstance(x, float) for x in hit.query_embedding)
    assert look(cache, "list lookup", at_cosine(v64, 0.99, rng).tolist()).query == "from float64"
    # Scale does not matter for a cosine; stored vectors need not be normalised.
    put(cache, "scaled", 7.5 * unit(rng))
    assert look(cache, "scaled", [1.0] * DIM).match == "exact"


# --- expiry and invalidation ----------------------------------------------------------------


def test_expired_entries_never_match_and_the_ttl_is_the_policys(redis, rng, clock):
    cache = RAGQueryCache(redis, policies=StaticPolicies(ttl_seconds=900), clock=clock, index=RAGIndex())
    v = unit(rng)
    put(cache, "short", v, ttl=60)
    put(cache, "policy ttl", unit(rng))
    assert 890 < redis.ttl(keys.rag_entry(None, keys.rag_entry_digest("policy ttl", MODEL, 5))) <= 900
    assert 50 < redis.ttl(keys.rag_entry(None, keys.rag_entry_digest("short", MODEL, 5))) <= 60
    assert look(cache, "near", at_cosine(v, 0.99, rng)).query == "short"
    clock.advance(61)  # past the entry's expiry: the local index skips it without asking Redis
    assert look(cache, "short", v) is None
    assert look(cache, "near", at_cosine(v, 0.99, rng)) is None


def test_an_entry_gone_from_redis_never_matches_even_if_the_index_still_holds_it(cache, redis, rng):
    v = unit(rng)
    put(cache, "doomed", v)
    assert look(cache, "near", at_cosine(v, 0.99, rng)).query == "doomed"  # now in this process's index
    key = keys.rag_entry(None, keys.rag_entry_digest("doomed", MODEL, 5))
    redis.delete(key)  # gone from Redis (as on expiry or eviction); the index says it lives for an hour
    assert not redis.exists(key)
    ns = next(iter(cache.index._namespaces.values()))
    assert ns.stats()["rows"] - ns.stats()["dead"] == 1
    assert look(cache, "near", at_cosine(v, 0.99, rng)) is None
    assert ns.stats()["rows"] - ns.stats()["dead"] == 0  # dropped from the index after the check


def test_invalidating_a_masterplan_removes_its_entries_only(cache, redis, rng):
    mp, other = uuid.uuid4(), uuid.uuid4()
    vectors = {name: unit(rng) for name in ("a", "b", "c")}
    for name, v in vectors.items():
        put(cache, name, v, masterplan_id=mp)
        put(cache, name, v, masterplan_id=other)
    assert look(cache, "near a", at_cosine(vectors["a"], 0.99, rng), masterplan_id=mp).query == "a"  # index loaded
    assert cache.invalidate_masterplan(mp) == 3
    for name, v in vectors.items():
        assert look(cache, name, v, masterplan_id=mp) is None
        assert look(cache, f"near {name}", at_cosine(v, 0.99, rng), masterplan_id=mp) is None
        assert look(cache, name, v, masterplan_id=other).match == "exact"
        assert look(cache, f"near {name}", at_cosine(v, 0.99, rng), masterplan_id=other).query == name
    assert list(redis.scan_iter(match=keys.rag_scope_pattern(mp))) == []
    # A fresh process (empty index) does not resurrect them from the log either.
    fresh = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    assert look(fresh, "near a", at_cosine(vectors["a"], 0.99, rng), masterplan_id=mp) is None
    # The scope works again for new entries.
    put(cache, "a", vectors["a"], masterplan_id=mp)
    assert look(fresh, "near a", at_cosine(vectors["a"], 0.99, rng), masterplan_id=mp).query == "a"


def test_a_set_that_raced_an_invalidation_cannot_resurrect_an_old_retrieval(cache, rng):
    mp, v = uuid.uuid4(), unit(rng)
    skipped = sample("mgecache_cache_skipped_writes_total", reason="stale_generation")
    miss = cache.lookup("q", v, embedding_model=MODEL, top_k=5, masterplan_id=mp)  # triggers a retrieval...
    assert miss.hit is None
    cache.invalidate_masterplan(mp)  # ...which an invalidation overtakes
    assert put(cache, "q", v, masterplan_id=mp, token=miss.token) is False  # made for the dead generation
    assert look(cache, "q", v, masterplan_id=mp) is None
    assert sample("mgecache_cache_skipped_writes_total", reason="stale_generation") == skipped + 1
    miss = cache.lookup("q", v, embedding_model=MODEL, top_k=5, masterplan_id=mp)
    assert put(cache, "q", v, masterplan_id=mp, token=miss.token) is True  # made after the invalidation
    assert look(cache, "q", v, masterplan_id=mp).match == "exact"


def test_invalidate_all_clears_this_layer_only(cache, redis, rng):
    v, mp = unit(rng), uuid.uuid4()
    put(cache, "global", v)
    put(cache, "scoped", v, masterplan_id=mp)
    unrelated = f"{keys.prefix()}llm:global:{'0' * 64}"
    redis.set(unrelated, b"kept")
    assert cache.invalidate_all() == 2
    assert look(cache, "global", v) is None
    assert look(cache, "scoped", v, masterplan_id=mp) is None
    assert look(cache, "near", at_cosine(v, 0.99, rng)) is None
    assert redis.get(unrelated) == b"kept"


def test_reclaim_tasks_report_what_they_removed(cache, redis, rng):
    mp = uuid.uuid4()
    for i in range(4):
        put(cache, f"q{i}", unit(rng), masterplan_id=mp)
        put(cache, f"g{i}", unit(rng))
    assert cache.invalidate_masterplan(mp, reclaim="celery") == 0  # the eager Celery task ran instead
    assert list(redis.scan_iter(match=keys.rag_scope_pattern(mp))) == []
    assert reclaim_rag_masterplan.delay(str(mp)).get() == 0  # idempotent
    cache.invalidate_all(reclaim="celery")
    assert list(redis.scan_iter(match=keys.rag_scope_pattern(None))) == []
    assert reclaim_rag_dead_keys.delay().get() == 0


# --- bad input ------------------------------------------------------------------------------


class Unserialisable:
    pass


@pytest.mark.parametrize(
    ("query", "vector", "top_k", "message"),
    [
        ("q", [0.1, float("nan"), 0.3], 5, "NaN or Inf"),
        ("q", np.array([0.1, np.inf, 0.3]), 5, "NaN or Inf"),
        ("q", np.zeros(8), 5, "zero vector"),
        ("q", [], 5, "non-empty 1-D"),
        ("q", np.ones((2, 4)), 5, "1-D"),
        ("q", ["a", "b"], 5, "only numbers"),
        ("q", "1,2,3", 5, "list of floats"),
        ("", [1.0, 2.0], 5, "must not be empty"),
        ("   ", [1.0, 2.0], 5, "must not be empty"),
        (None, [1.0, 2.0], 5, "must be a str"),
        ("q", [1.0, 2.0], 0, "top_k must be >= 1"),
        ("q", [1.0, 2.0], -3, "top_k must be >= 1"),
        ("q", [1.0, 2.0], "5", "top_k must be an int"),
        ("q", [1.0, 2.0], True, "top_k must be an int"),
    ],
)
def test_bad_input_raises_a_clear_value_error(cache, query, vector, top_k, message):
    with pytest.raises(ValueError, match=message):
        cache.get(query, vector, embedding_model=MODEL, top_k=top_k)
    with pytest.raises(ValueError, match=message):
        cache.set(query, vector, DOCS, embedding_model=MODEL, top_k=top_k)


@pytest.mark.parametrize(
    ("documents", "message"),
    [
        ([{"x": Unserialisable()}], "JSON-serialisable"),
        ([{"x": float("nan")}], "JSON-serialisable"),
        ([{"x": {1, 2}}], "JSON-serialisable"),
        ({"not": "a list"}, "must be a list"),
        (["not a dict"], r"documents\[0\] must be a dict"),
    ],
)
def test_documents_must_be_a_json_serialisable_list_of_dicts(cache, redis, rng, documents, message):
    with pytest.raises(ValueError, match=message):
        put(cache, "q", unit(rng), docs=documents)
    assert list(redis.scan_iter(match=keys.rag_layer_pattern())) == []  # nothing half-written


def test_an_entry_over_the_size_limit_is_not_stored_and_is_counted(cache, redis, rng, settings):
    settings.MGECACHE = {**settings.MGECACHE, "RAG_MAX_ENTRY_BYTES": 4096}
    skipped = sample("mgecache_cache_skipped_writes_total", reason="too_large")
    v = unit(rng)
    put(cache, "big", v, docs=[{"content": "x" * 5000}])
    assert sample("mgecache_cache_skipped_writes_total", reason="too_large") == skipped + 1
    assert look(cache, "big", v) is None
    put(cache, "small", v, docs=[{"content": "x" * 100}])
    assert look(cache, "small", v).match == "exact"


def test_a_corrupt_value_is_a_miss_and_is_deleted(cache, redis, rng):
    v = unit(rng)
    key = keys.rag_entry(None, keys.rag_entry_digest("q", MODEL, 5))
    errors = sample("mgecache_cache_errors_total", operation="corrupt")
    for raw in (b"garbage", b"e0g0|" + msgpack.packb({"f": 1, "q": "q"})):
        redis.set(key, raw)
        assert look(cache, "q", v) is None
        assert not redis.exists(key)
    assert sample("mgecache_cache_errors_total", operation="corrupt") == errors + 2


def test_values_are_tagged_msgpack_not_pickle(cache, redis, rng):
    put(cache, "q", unit(rng))
    raw = redis.get(keys.rag_entry(None, keys.rag_entry_digest("q", MODEL, 5)))
    tag, payload = raw.split(b"|", 1)
    assert tag == b"e0g0"
    decoded = msgpack.unpackb(payload)
    assert decoded["q"] == "q"
    assert decoded["m"] == MODEL
    assert decoded["k"] == 5
    assert not raw.startswith(b"\x80")  # no pickle protocol header


# --- policy, metrics, counters ----------------------------------------------------------------


def test_a_disabled_policy_bypasses_the_cache(redis, rng):
    enabled = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    disabled = RAGQueryCache(redis, policies=StaticPolicies(enabled=False), index=RAGIndex())
    v = unit(rng)
    put(enabled, "q", v)
    assert look(disabled, "q", v) is None
    w = unit(rng)
    put(disabled, "other", w)
    assert look(enabled, "other", w) is None


def test_metrics_and_durable_counters(cache, rng):
    before = {
        (name, layer): sample(name, layer)
        for name in ("mgecache_cache_hits_total", "mgecache_cache_misses_total", "mgecache_cache_writes_total")
        for layer in ("rag", "rag_similarity")
    }
    histogram = REGISTRY.get_sample_value("mgecache_rag_similarity_score_count") or 0.0
    gauge = REGISTRY.get_sample_value("mgecache_rag_index_entries") or 0.0
    assert cache.hit_rate() == 0.0
    v = unit(rng)
    look(cache, "q", v)  # miss (empty index: no score to record)
    put(cache, "q", v)
    look(cache, "q", v)  # exact hit
    look(cache, "near", at_cosine(v, 0.99, rng))  # similar hit
    look(cache, "far", at_cosine(v, 0.5, rng))  # miss after a search

    def delta(name, layer):
        return sample(name, layer) - before[(name, layer)]

    assert delta("mgecache_cache_hits_total", "rag") == 1
    assert delta("mgecache_cache_hits_total", "rag_similarity") == 1
    assert delta("mgecache_cache_misses_total", "rag") == 3  # exact misses
    assert delta("mgecache_cache_misses_total", "rag_similarity") == 2  # full misses
    assert delta("mgecache_cache_writes_total", "rag") == 1
    assert (REGISTRY.get_sample_value("mgecache_rag_similarity_score_count") or 0) - histogram == 2
    assert (REGISTRY.get_sample_value("mgecache_rag_index_entries") or 0) - gauge == 1
    assert cache.stats() == {"misses": 2.0, "hits": 1.0, "similar_hits": 1.0, "writes": 1.0}
    assert cache.hit_rate() == pytest.approx(0.5)


async def test_async_twins(redis, rng):
    cache = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    mp, v = uuid.uuid4(), unit(rng)
    assert await cache.aget("q", v, embedding_model=MODEL, top_k=3, masterplan_id=mp) is None
    await cache.aset("q", v, DOCS, embedding_model=MODEL, top_k=3, masterplan_id=mp)
    exact = await cache.aget("q", v.astype(np.float64), embedding_model=MODEL, top_k=3, masterplan_id=mp)
    assert exact.match == "exact"
    assert exact.documents == DOCS
    near = await cache.aget("near", at_cosine(v, 0.98, rng), embedding_model=MODEL, top_k=3, masterplan_id=mp)
    assert near.match == "similar"
    assert near.query == "q"
    # The sync and async paths share one index and one log.
    assert look(cache, "near", at_cosine(v, 0.98, rng), top_k=3, masterplan_id=mp).query == "q"
    assert await cache.ainvalidate_masterplan(mp) == 1
    assert await cache.aget("q", v, embedding_model=MODEL, top_k=3, masterplan_id=mp) is None
    with pytest.raises(ValueError, match="zero vector"):
        await cache.aget("q", [0.0] * DIM, embedding_model=MODEL, top_k=3)


@pytest.mark.parametrize(
    ("overrides", "error_id"),
    [
        ({"RAG_INDEX_MAX_ENTRIES": 0}, "cache_app.E040"),
        ({"RAG_LOG_SEGMENT_BYTES": 100}, "cache_app.E040"),
        ({"RAG_INDEX_BLAS_THREADS": 0}, "cache_app.E040"),
        ({"RAG_INDEX_MAX_ENTRIES": 10, "RAG_INDEX_MAX_TOTAL_ENTRIES": 5}, "cache_app.E041"),
    ],
)
def test_rag_index_settings_are_validated(settings, overrides, error_id):
    from cache_app.checks import check_rag_index_settings

    assert check_rag_index_settings() == []
    settings.MGECACHE = {**settings.MGECACHE, **overrides}
    assert [e.id for e in check_rag_index_settings()] == [error_id]
