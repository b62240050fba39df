"""manage.py load_documents: JSONL or a folder of .txt files, validated, embedded in batches."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.management import CommandError, call_command

from cache_app.models import Document, Masterplan
from cache_app.rag.documents import DocumentStore
from cache_app.rag.embedders import HashedNgramEmbedder


@pytest.fixture
def plan(db) -> Masterplan:
    return Masterplan.objects.create(name="load docs")


def write_jsonl(path, records) -> str:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return str(path)


def load(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command("load_documents", *args, stdout=out, **kwargs)
    return out.getvalue()


@pytest.mark.django_db
def test_jsonl_is_loaded_embedded_and_searchable(tmp_path, plan, capsys):
    path = write_jsonl(
        tmp_path / "docs.jsonl",
        [
            {"content": "Redis keeps the LLM prompt cache", "metadata": {"source": "ops.md"}},
            "",
            {"content": "Celery runs batched atoms", "title": "batching"},
            {"content": "Postgres stores masterplans and documents"},
        ],
    )
    out = load(path, "--masterplan", str(plan.pk), "--batch-size", "2")
    assert f"Loaded 3 documents into masterplan {plan.pk} (hashed-ngram-384-v1)" in out
    assert "3/3" in capsys.readouterr().err  # the progress bar
    docs = list(Document.objects.filter(masterplan=plan).order_by("id"))
    assert [d.content for d in docs] == [
        "Redis keeps the LLM prompt cache",
        "Celery runs batched atoms",
        "Postgres stores masterplans and documents",
    ]
    assert docs[0].metadata == {"source": "ops.md"}
    assert docs[1].metadata == {"title": "batching"}  # extra keys fold into metadata
    assert all(d.embedding_model == "hashed-ngram-384-v1" and len(d.embedding) == 384 * 4 for d in docs)
    best = DocumentStore(embedder=HashedNgramEmbedder()).search_text(
        "celery runs batched atoms!", masterplan_id=plan.pk, top_k=1
    )
    assert best[0]["content"] == "Celery runs batched atoms"


@pytest.mark.django_db
def test_folder_of_text_files(tmp_path):
    (tmp_path / "b.txt").write_text("Second document\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("First document", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("   \n", encoding="utf-8")
    (tmp_path / "ignored.md").write_text("not a txt file", encoding="utf-8")
    out = load(str(tmp_path), verbosity=0)
    assert "Loaded 2 documents into the global corpus" in out
    docs = {d.content: d.metadata for d in Document.objects.filter(masterplan__isnull=True)}
    assert docs == {
        "Second document": {"source": "b.txt", "title": "b"},
        "First document": {"source": "sub/a.txt", "title": "a"},
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"content": "ok"}, "{not json"], r"line 2: invalid JSON"),
        ([{"content": "ok"}, "", {"metadata": {}}], r"line 3: 'content' must be a non-empty string"),
        ([{"content": "   "}], r"line 1: 'content' must be a non-empty string"),
        ([{"content": "ok", "metadata": ["a"]}], r"line 1: 'metadata' must be a JSON object"),
        (["[1, 2]"], r"line 1: expected a JSON object"),
        ([""], r"no documents to load"),
    ],
)
def test_bad_jsonl_is_refused_with_the_line_number_and_nothing_is_loaded(tmp_path, records, message):
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(CommandError, match=message):
        load(path)
    assert Document.objects.count() == 0


@pytest.mark.django_db
def test_bad_arguments_are_clear_errors(tmp_path):
    good = write_jsonl(tmp_path / "ok.jsonl", [{"content": "ok"}])
    with pytest.raises(CommandError, match="does not exist"):
        load(str(tmp_path / "missing.jsonl"))
    with pytest.raises(CommandError, match="must be a UUID"):
        load(good, "--masterplan", "plan-42")
    unknown = uuid.uuid4()
    with pytest.raises(CommandError, match=f"No masterplan with id {unknown}"):
        load(good, "--masterplan", str(unknown))
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(CommandError, match=r"no non-empty \.txt files"):
        load(str(tmp_path / "emptydir"))
    with pytest.raises(CommandError, match="cannot be imported"):
        load(good, "--embedder", "cache_app.rag.embedders.Nope")
    with pytest.raises(CommandError, match="--batch-size"):
        load(good, "--batch-size", "0")
    (tmp_path / "latin1.jsonl").write_bytes('{"content": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(CommandError, match="not UTF-8"):
        load(str(tmp_path / "latin1.jsonl"))
    assert Document.objects.count() == 0
