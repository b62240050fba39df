"""The hit guard inside RAGQueryCache's lookup: every caller of get/aget gets it.

Vectors are placed at chosen cosines (as in test_cache.py) so that the query texts alone
decide; the cache runs on the configured Redis (real in CI).
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from django.urls import reverse
from prometheus_client import REGISTRY

from cache_app.core.policies import DatabasePolicySource
from cache_app.models import CachePolicy, SimilarityShadowRecord
from cache_app.rag import shadow
from cache_app.rag.cache import RAGIndex, RAGQueryCache
from tests.conftest import StaticPolicies

MODEL = "hashed-ngram-384-v1"
DIM = 384
DOCS = [{"content": "passage", "score": 0.9}]


def unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(DIM)
    return v / np.linalg.norm(v)


def at_cosine(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    other = rng.standard_normal(DIM)
    other -= other.dot(base) * base
    other /= np.linalg.norm(other)
    return cosine * base + np.sqrt(1.0 - cosine**2) * other


def rejections(reason: str) -> float:
    return REGISTRY.get_sample_value("mgecache_rag_similarity_rejections_total", {"reason": reason}) or 0.0


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(42)


def make(redis, **policy) -> RAGQueryCache:
    return RAGQueryCache(redis, policies=StaticPolicies(**policy), index=RAGIndex())


def put(cache: RAGQueryCache, query: str, vector, docs=None, **kwargs) -> None:
    cache.set(query, vector, docs or [{"for": query}], embedding_model=MODEL, top_k=5, **kwargs)


def look(cache: RAGQueryCache, query: str, vector, **kwargs):
    return cache.get(query, vector, embedding_model=MODEL, top_k=5, **kwargs)


@pytest.fixture
def recorder(monkeypatch) -> shadow.ShadowRecorder:
    """The process-wide shadow recorder, replaced by one whose flushes the test runs itself."""
    jobs: list = []
    instance = shadow.ShadowRecorder(schedule=lambda delay, job: jobs.append(job), background=False)
    instance.jobs = jobs  # type: ignore[attr-defined]
    shadow.get_shadow_recorder.set(instance)  # reset_process_state() forgets it after the test
    return instance


def test_a_rejected_best_candidate_is_a_miss_for_it_and_the_next_best_is_served(redis, rng):
    cache = make(redis)
    q = unit(rng)
    put(cache, "Keep four replicas of each shard", at_cosine(q, 0.99, rng))
    put(cache, "keep three replicas of each shard!", at_cosine(q, 0.97, rng))
    before = rejections("number")
    hit = look(cache, "Keep three replicas of each shard", q)
    assert hit.match == "similar"
    assert hit.query == "keep three replicas of each shard!"
    assert hit.documents == [{"for": "keep three replicas of each shard!"}]
    assert rejections("number") - before == 1


def test_when_every_candidate_is_rejected_the_lookup_misses(redis, rng):
    cache = make(redis)
    q = unit(rng)
    put(cache, "Sort the invoices in descending order", at_cosine(q, 0.99, rng))
    put(cache, "Do not sort the invoices in ascending order", at_cosine(q, 0.98, rng))
    before = (rejections("antonym"), rejections("negation"))
    assert look(cache, "Sort the invoices in ascending order", q) is None
    assert (rejections("antonym") - before[0], rejections("negation") - before[1]) == (1, 1)
    assert cache.stats()["misses"] == 1
    assert "similar_hits" not in cache.stats()


def test_the_guard_can_be_switched_off_per_policy(redis, rng):
    guarded, unguarded = make(redis), make(redis, similarity_guard=False)
    q = unit(rng)
    put(guarded, "Keep four replicas of each shard", at_cosine(q, 0.99, rng))
    assert look(guarded, "Keep three replicas of each shard", q) is None
    assert look(unguarded, "Keep three replicas of each shard", q).query == "Keep four replicas of each shard"


@pytest.mark.django_db
def test_the_switch_is_read_live_from_the_cache_policy(redis, rng):
    cache = RAGQueryCache(redis, policies=DatabasePolicySource(refresh_seconds=0), index=RAGIndex())
    q = unit(rng)
    put(cache, "Retry every 10 minutes", at_cosine(q, 0.99, rng))
    assert look(cache, "Retry every 10 hours", q) is None
    CachePolicy.objects.filter(layer="rag").update(similarity_guard=False)
    assert look(cache, "Retry every 10 hours", q).query == "Retry every 10 minutes"


def test_a_lexical_near_duplicate_is_served_below_the_threshold_and_nothing_else_is(redis, rng):
    cache = make(redis)
    q = unit(rng)
    put(cache, "Why is the importer slow?", at_cosine(q, 0.92, rng), masterplan_id=None)
    assert look(cache, "Why is the exporter slow?", q) is None  # 0.92 < 0.95 and another question
    hit = look(cache, "why is the imporetr slow", q)  # a typo, case, punctuation
    assert hit.match == "similar"
    assert hit.query == "Why is the importer slow?"
    assert 0.915 < hit.similarity < 0.925
    # Below the near-duplicate floor nothing is served, not even a near-duplicate.
    mp = uuid.uuid4()
    put(cache, "Why is the importer slow?", at_cosine(q, 0.88, rng), masterplan_id=mp)
    assert look(cache, "why is the importer slow", q, masterplan_id=mp) is None


def test_without_the_guard_there_is_no_near_duplicate_tier(redis, rng):
    cache = make(redis, similarity_guard=False)
    q = unit(rng)
    put(cache, "Why is the importer slow?", at_cosine(q, 0.92, rng))
    assert look(cache, "why is the importer slow", q) is None


async def test_the_async_lookup_is_guarded_too(redis, rng):
    cache = make(redis)
    q = unit(rng)
    put(cache, "Enable gzip in deploy/nginx.conf", at_cosine(q, 0.99, rng))
    put(cache, "disable gzip in deploy/nginx.conf", at_cosine(q, 0.97, rng))
    hit = await cache.aget("Disable gzip in deploy/nginx.conf?", q, embedding_model=MODEL, top_k=5)
    assert hit.query == "disable gzip in deploy/nginx.conf"


def test_shadow_mode_records_a_similarity_hit_and_the_caller_gets_a_miss(redis, rng, recorder):
    cache = make(redis, similarity_shadow=True)
    q = unit(rng)
    mp = uuid.uuid4()
    put(cache, "Keep four replicas of each shard", at_cosine(q, 0.99, rng), masterplan_id=mp)
    put(cache, "keep three replicas of each shard", at_cosine(q, 0.97, rng), masterplan_id=mp)
    hits_before = REGISTRY.get_sample_value("mgecache_rag_similarity_shadow_hits_total") or 0.0
    assert look(cache, "Keep three replicas of each shard?", q, masterplan_id=mp) is None
    assert (REGISTRY.get_sample_value("mgecache_rag_similarity_shadow_hits_total") or 0.0) - hits_before == 1
    assert recorder.pending() == 1
    assert len(recorder.jobs) == 1  # one flush scheduled, not run on the lookup's thread
    sample = recorder._buffer[0]
    assert (sample.query, sample.cached_query, sample.embedding_model, sample.scope) == (
        "Keep three replicas of each shard?",
        "keep three replicas of each shard",
        MODEL,
        str(mp),
    )
    assert 0.965 < sample.similarity < 0.975
    assert cache.stats(mp)["misses"] == 1
    # Exact hits are not affected by shadow mode.
    assert look(cache, "Keep four replicas of each shard", q, masterplan_id=mp).match == "exact"


@pytest.mark.django_db
def test_shadow_records_reach_the_database_and_the_admin(redis, rng, recorder, admin_client):
    cache = make(redis, similarity_shadow=True)
    q = unit(rng)
    put(cache, "How do I rotate the JWT signing key?", at_cosine(q, 0.98, rng))
    assert look(cache, "how do I rotate the JWT signing key", q) is None
    recorder.jobs.pop()()  # the scheduled flush, run here
    record = SimilarityShadowRecord.objects.get()
    assert (record.query, record.cached_query, record.scope) == (
        "how do I rotate the JWT signing key",
        "How do I rotate the JWT signing key?",
        "global",
    )
    page = admin_client.get(reverse("admin:cache_app_similarityshadowrecord_changelist"))
    assert page.status_code == 200
    assert b"rotate the JWT signing key" in page.content
    assert admin_client.get(reverse("admin:cache_app_similarityshadowrecord_add")).status_code == 403
