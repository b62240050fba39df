"""The document store: cosine top-k per (masterplan, embedding model), fresh when documents change."""

from __future__ import annotations

import asyncio
import uuid

import numpy as np
import pytest

from cache_app.models import Document, Masterplan
from cache_app.rag import documents as document_store
from cache_app.rag.documents import DocumentFileError, DocumentStore, documents_changed, embed_document, read_documents
from cache_app.rag.embedders import HashedNgramEmbedder
from tests.conftest import run_python

MODEL = "unit-3d"


def make_doc(content: str, vector, *, masterplan=None, model: str = MODEL, **metadata) -> Document:
    doc = Document(masterplan=masterplan, content=content, metadata=metadata, embedding_model=model)
    doc.set_embedding(vector)
    doc.save()
    return doc


@pytest.fixture
def store(clock) -> DocumentStore:
    return DocumentStore(embedder=HashedNgramEmbedder(), refresh_seconds=2.0, clock=clock)


@pytest.fixture
def plan(db) -> Masterplan:
    return Masterplan.objects.create(name="docs plan")


@pytest.mark.django_db
def test_embedding_roundtrips_as_float32_bytes():
    doc = make_doc("x", [0.5, -1.25, 3.0])
    assert len(doc.embedding) == 12
    again = Document.objects.get(pk=doc.pk)
    assert again.get_embedding().tolist() == [0.5, -1.25, 3.0]


@pytest.mark.django_db
def test_top_k_by_cosine_best_first(store, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        east = make_doc("east", [1, 0, 0], source="a")
        north = make_doc("north", [0, 1, 0])
        north_east = make_doc("north-east", [1, 1, 0])
        make_doc("down", [0, 0, -1])
    results = store.search([2, 0.1, 0], top_k=3, embedding_model=MODEL)
    assert [r["content"] for r in results] == ["east", "north-east", "north"]
    assert results[0]["id"] == east.pk
    assert results[0]["metadata"] == {"source": "a"}
    assert results[0]["score"] == pytest.approx(2 / np.linalg.norm([2, 0.1, 0]), abs=1e-6)
    assert results[1]["score"] == pytest.approx((2 + 0.1) / (np.sqrt(2) * np.linalg.norm([2, 0.1, 0])), abs=1e-6)
    assert results[0]["score"] > results[1]["score"] > results[2]["score"]
    assert results[1]["id"] == north_east.pk
    assert results[2]["id"] == north.pk
    assert len(store.search([1, 0, 0], top_k=50, embedding_model=MODEL)) == 4  # top_k above n


@pytest.mark.django_db
def test_scopes_are_separate_by_masterplan_and_model(store, plan, django_capture_on_commit_callbacks):
    other = Masterplan.objects.create(name="other")
    with django_capture_on_commit_callbacks(execute=True):
        make_doc("global", [1, 0, 0])
        make_doc("mine", [1, 0, 0], masterplan=plan)
        make_doc("theirs", [1, 0, 0], masterplan=other)
        make_doc("other model", [1, 0, 0], masterplan=plan, model="another-model")
    assert [r["content"] for r in store.search([1, 0, 0], embedding_model=MODEL)] == ["global"]
    assert [r["content"] for r in store.search([1, 0, 0], masterplan_id=plan.pk, embedding_model=MODEL)] == ["mine"]
    assert [r["content"] for r in store.search([1, 0, 0], masterplan_id=str(other.pk), embedding_model=MODEL)] == [
        "theirs"
    ]
    assert store.search([1, 0, 0], masterplan_id=uuid.uuid4(), embedding_model=MODEL) == []
    with pytest.raises(ValueError, match="UUID"):
        store.search([1, 0, 0], masterplan_id="not-a-uuid", embedding_model=MODEL)


@pytest.mark.django_db
def test_changes_in_this_process_are_seen_at_once(store, django_capture_on_commit_callbacks):
    seen: list = []

    def on_change(sender, masterplan_id, **kwargs):
        seen.append(masterplan_id)

    documents_changed.connect(on_change)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            doc = make_doc("first", [1, 0, 0])
        assert [r["content"] for r in store.search([1, 0, 0], embedding_model=MODEL)] == ["first"]
        with django_capture_on_commit_callbacks(execute=True):
            make_doc("second", [0.9, 0.1, 0])
        assert len(store.search([1, 0, 0], embedding_model=MODEL)) == 2  # no clock advance needed
        with django_capture_on_commit_callbacks(execute=True):
            doc.content = "first, edited"
            doc.save()
        assert store.search([1, 0, 0], embedding_model=MODEL)[0]["content"] == "first, edited"
        with django_capture_on_commit_callbacks(execute=True):
            doc.delete()
        assert [r["content"] for r in store.search([1, 0, 0], embedding_model=MODEL)] == ["second"]
    finally:
        documents_changed.disconnect(on_change)
    assert seen == [None] * 4  # one signal per committed change, global scope


@pytest.mark.django_db
def test_changes_without_signals_are_seen_after_the_refresh_interval(store, clock):
    # bulk_create sends no signal: this is what another process's write looks like from here.
    make_doc("a", [1, 0, 0])
    assert len(store.search([1, 0, 0], embedding_model=MODEL)) == 1
    extra = Document(content="b", embedding_model=MODEL)
    extra.set_embedding([1, 0, 0])
    Document.objects.bulk_create([extra])
    clock.advance(1.0)
    assert len(store.search([1, 0, 0], embedding_model=MODEL)) == 1  # served from memory
    clock.advance(1.5)
    assert len(store.search([1, 0, 0], embedding_model=MODEL)) == 2


@pytest.mark.django_db
def test_unchanged_documents_are_not_reloaded(store, clock):
    make_doc("a", [1, 0, 0])
    store.search([1, 0, 0], embedding_model=MODEL)
    assert store.loads == 1
    for _ in range(5):
        clock.advance(3)
        store.search([1, 0, 0], embedding_model=MODEL)
    assert store.loads == 1  # fingerprint checked, matrix kept


@pytest.mark.django_db
def test_bad_queries_are_refused(store):
    make_doc("a", [1, 0, 0])
    with pytest.raises(ValueError, match="dimensions"):
        store.search([1, 0], embedding_model=MODEL)
    with pytest.raises(ValueError, match="top_k"):
        store.search([1, 0, 0], top_k=0, embedding_model=MODEL)
    assert store.search([0, 0, 0], embedding_model=MODEL) == []  # a zero vector matches nothing
    assert store.search([1, 0, 0], embedding_model="nobody") == []


@pytest.mark.django_db
def test_add_embeds_in_batches_and_search_text_finds_near_duplicates(store, plan):
    batches: list[int] = []
    docs = [
        ("How to configure the Redis cache TTL", {"n": 1}),
        ("Deploying gunicorn behind nginx", {"n": 2}),
        ("Writing Celery tasks that are idempotent", {"n": 3}),
    ]
    assert store.add(docs, masterplan_id=plan.pk, batch_size=2, progress=batches.append) == 3
    assert batches == [2, 1]
    stored = Document.objects.filter(masterplan=plan)
    assert {d.embedding_model for d in stored} == {"hashed-ngram-384-v1"}
    assert all(len(d.embedding) == 384 * 4 for d in stored)
    best = store.search_text("how to configure the redis cache ttl?", masterplan_id=plan.pk, top_k=1)[0]
    assert best["metadata"] == {"n": 1}
    assert best["score"] > 0.95


@pytest.mark.django_db(transaction=True)
def test_asearch_inside_an_event_loop():
    # Committed rows (transaction=True): asearch reads them on the ORM thread's own connection.
    plan = Masterplan.objects.create(name="async")
    make_doc("hello", [0, 1, 0], masterplan=plan)
    store = DocumentStore(embedder=HashedNgramEmbedder(), refresh_seconds=0)

    async def main():
        return await store.asearch([0, 1, 0], masterplan_id=plan.pk, embedding_model=MODEL)

    assert [r["content"] for r in asyncio.run(main())] == ["hello"]


CHILD_ADDS = """
from cache_app.rag.documents import DocumentStore
from cache_app.rag.embedders import HashedNgramEmbedder
n = DocumentStore(embedder=HashedNgramEmbedder()).add([("written by another process", {{"by": "child"}})],
                                                    masterplan_id="{plan}")
print(n)
"""


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_documents_added_by_another_process_are_found(subprocess_env, clock):
    plan = Masterplan.objects.create(name="cross-process")
    store = DocumentStore(embedder=HashedNgramEmbedder(), refresh_seconds=2.0, clock=clock)
    assert store.search_text("written by another process", masterplan_id=plan.pk) == []
    assert run_python(CHILD_ADDS.format(plan=plan.pk), subprocess_env).stdout.strip() == "1"
    clock.advance(2.5)  # no signal reaches this process; the fingerprint check finds the row
    [found] = store.search_text("written by another process", masterplan_id=plan.pk)
    assert found["metadata"] == {"by": "child"}
    assert found["score"] == pytest.approx(1.0, abs=1e-5)


def test_process_wide_store_is_shared():
    assert document_store.get_document_store() is document_store.get_document_store()


class CountingEmbedder(HashedNgramEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def embed(self, texts):
        self.calls += 1
        return super().embed(texts)


def test_the_vector_follows_the_text():
    embedder = CountingEmbedder()
    doc = Document(content="first text", metadata={})
    embed_document(doc, content_changed=True, embedder=embedder)
    first = doc.embedding
    assert (embedder.calls, doc.embedding_model) == (1, embedder.model_name)
    embed_document(doc, content_changed=False, embedder=embedder)
    assert (embedder.calls, doc.embedding) == (1, first)  # unchanged text: no new embedding
    doc.content = "another text"
    embed_document(doc, content_changed=True, embedder=embedder)
    assert embedder.calls == 2
    assert doc.embedding != first


def test_document_files_name_the_file_and_line_of_a_problem(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"content": "one", "metadata": {"a": 1}, "page": 2}\n\n{"content": ""}\n', encoding="utf-8")
    with pytest.raises(DocumentFileError, match=r"docs\.jsonl, line 3: 'content' must be a non-empty string"):
        read_documents(path)
    path.write_text('{"content": "one", "metadata": {"a": 1}, "page": 2}\n', encoding="utf-8")
    assert read_documents(path) == [("one", {"page": 2, "a": 1})]
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "b.txt").write_text(" second \n", encoding="utf-8")
    (folder / "a.txt").write_text("first", encoding="utf-8")
    (folder / "empty.txt").write_text("  ", encoding="utf-8")
    assert read_documents(folder) == [
        ("first", {"source": "a.txt", "title": "a"}),
        ("second", {"source": "sub/b.txt", "title": "b"}),
    ]
