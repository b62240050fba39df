"""RAGEngine end to end: embed, cache (exact/similar), store search on a miss."""

import importlib.util
import uuid

import pytest

from cache_app.models import Masterplan
from cache_app.rag.cache import RAGIndex, RAGQueryCache
from cache_app.rag.documents import DocumentStore
from cache_app.rag.embedders import HashedNgramEmbedder, load_embedder
from cache_app.rag.engine import RAGEngine
from tests.conftest import IN_CI

pytestmark = pytest.mark.django_db

MP = uuid.UUID("44444444-4444-4444-8444-444444444444")
DOCS = [
    ("Redis SCAN iterates the keyspace with a cursor; use COUNT to size each page.", {"topic": "redis"}),
    ("Django system checks validate settings at startup and report ids like app.E001.", {"topic": "django"}),
    ("Cosine similarity of unit vectors is their dot product.", {"topic": "math"}),
    ("Celery tasks with acks_late are acknowledged after they finish.", {"topic": "celery"}),
]


@pytest.fixture
def engine():
    Masterplan.objects.create(id=MP, name="rag test")
    embedder = HashedNgramEmbedder()
    store = DocumentStore(embedder=embedder, refresh_seconds=0)
    store.add(DOCS, masterplan_id=MP)
    return RAGEngine(embedder=embedder, store=store, cache=RAGQueryCache(index=RAGIndex()))


def test_miss_searches_the_store_then_exact_hit(engine):
    first = engine.query("How does Redis SCAN iterate keys with a cursor?", top_k=2, masterplan_id=MP)
    assert first.cached is False
    assert first.match is None
    assert first.documents[0]["metadata"] == {"topic": "redis"}
    assert len(first.documents) == 2
    second = engine.query("How does Redis SCAN iterate keys with a cursor?", top_k=2, masterplan_id=MP)
    assert (second.cached, second.match, second.similarity) == (True, "exact", 1.0)
    assert second.documents == first.documents


def test_near_duplicate_query_is_a_similar_hit(engine):
    first = engine.query("How does Redis SCAN iterate keys with a cursor?", top_k=2, masterplan_id=MP)
    # Case, punctuation and word order differ: the hashed n-gram embedder scores it >= 0.95.
    near = engine.query("how does redis scan iterate KEYS with a cursor", top_k=2, masterplan_id=MP)
    assert near.cached is True
    assert near.match == "similar"
    assert near.similarity >= 0.95
    assert near.documents == first.documents


def test_scopes_and_top_k_do_not_share_entries(engine):
    engine.query("What do Django system checks validate?", top_k=2, masterplan_id=MP)
    assert engine.query("What do Django system checks validate?", top_k=3, masterplan_id=MP).cached is False
    other = engine.query("What do Django system checks validate?", top_k=2, masterplan_id=None)
    assert other.cached is False
    assert other.documents == []  # the global corpus is empty


@pytest.mark.django_db(transaction=True)  # the async path reads on the ORM thread: data must be committed
async def test_async_query(engine):
    first = await engine.aquery("What is cosine similarity of unit vectors?", top_k=1, masterplan_id=MP)
    assert first.cached is False
    assert first.documents[0]["metadata"] == {"topic": "math"}
    second = await engine.aquery("What is cosine similarity of unit vectors?", top_k=1, masterplan_id=MP)
    assert second.cached is True


def test_bad_input_is_a_clear_error(engine):
    with pytest.raises(ValueError, match="query"):
        engine.query("   ", masterplan_id=MP)
    with pytest.raises(ValueError, match="top_k"):
        engine.query("ok", top_k=0, masterplan_id=MP)
    with pytest.raises(ValueError, match="UUID"):
        engine.query("ok", masterplan_id="*")


HAS_ST = importlib.util.find_spec("sentence_transformers") is not None


@pytest.mark.skipif(not HAS_ST and not IN_CI, reason="needs the embeddings extra (requirements-embeddings.txt)")
def test_paraphrase_is_a_similar_hit_with_minilm():
    embedder = load_embedder("cache_app.rag.embedders.MiniLMEmbedder")
    Masterplan.objects.create(id=MP, name="rag minilm")
    store = DocumentStore(embedder=embedder, refresh_seconds=0)
    store.add(DOCS, masterplan_id=MP)
    engine = RAGEngine(embedder=embedder, store=store, cache=RAGQueryCache(index=RAGIndex()))
    first = engine.query("How can I iterate over all the keys in Redis?", top_k=1, masterplan_id=MP)
    assert first.cached is False
    assert first.documents[0]["metadata"] == {"topic": "redis"}
    para = engine.query("How can I iterate over every key in Redis?", top_k=1, masterplan_id=MP)
    assert para.cached is True
    assert para.match == "similar"
    assert para.similarity >= 0.95
    unrelated = engine.query("How are Celery tasks acknowledged?", top_k=1, masterplan_id=MP)
    assert unrelated.cached is False


def test_changing_documents_drops_stale_cached_results(engine):
    question = "How does Redis SCAN iterate keys with a cursor?"
    engine.query(question, top_k=1, masterplan_id=MP)
    assert engine.query(question, top_k=1, masterplan_id=MP).cached is True
    # on_commit callbacks run inside this test's transaction with captureOnCommitCallbacks.
    from django.test import TestCase

    with TestCase.captureOnCommitCallbacks(execute=True):
        engine.store.add(
            [("Redis SCAN with MATCH filters keys by a glob pattern.", {"topic": "redis-2"})], masterplan_id=MP
        )
    fresh = engine.query(question, top_k=1, masterplan_id=MP)
    assert fresh.cached is False
