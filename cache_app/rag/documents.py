"""The RAG document store: ``Document`` rows searched by cosine similarity in memory.

Each (masterplan, embedding model) scope is held as one L2-normalised float32 numpy
matrix; a search is one matrix-vector product and a partial sort.

Freshness:

* changes made in this process (``Document`` saves and deletes, :meth:`DocumentStore.add`,
  ``manage.py load_documents``) bump a process-local generation once committed, so the next
  search here re-checks the database at once;
* changes made by other processes are found by a cheap fingerprint query (count, max id,
  max ``updated_at`` of the scope) run at most every ``DOCUMENT_REFRESH_SECONDS``.

A changed fingerprint reloads that scope's matrix; an unchanged one costs no reload.
``QuerySet.update()`` bypasses ``updated_at`` and signals; use ``save()`` or reload by hand
(:meth:`DocumentStore.invalidate`).

``documents_changed`` (a Django signal, ``masterplan_id=`` keyword) is sent after commit
whenever this process changes documents, so a RAG cache can drop results that are stale.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Count, Max
from django.db.models.signals import post_delete, post_save
from django.dispatch import Signal, receiver

from cache_app.core import conf, keys
from cache_app.core.dbread import arun_orm, run_orm
from cache_app.core.lru import LRU
from cache_app.core.state import process_wide
from cache_app.models import Document
from cache_app.rag.embedders import Embedder, load_embedder

logger = logging.getLogger(__name__)

documents_changed = Signal()  # kwargs: masterplan_id (str | None)


class _Generation:
    """How many document changes this process has seen. It only grows, so it is never reset: a
    snapshot taken at an older generation is simply reloaded."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


_generation = _Generation()


def _bump_generation(masterplan_id: Any = None) -> None:
    _generation.bump()
    documents_changed.send(sender=Document, masterplan_id=keys.normalize_masterplan_id(masterplan_id))


def notify_changed(masterplan_id: Any = None) -> None:
    """Tell this process's stores (after the current transaction commits) that documents changed."""
    transaction.on_commit(lambda: _bump_generation(masterplan_id))


@receiver([post_save, post_delete], sender=Document)
def _document_changed(sender: type[Document], instance: Document, **kwargs: Any) -> None:
    notify_changed(instance.masterplan_id)


@dataclass(frozen=True)
class _Snapshot:
    fingerprint: tuple
    ids: np.ndarray
    contents: list[str]
    metadata: list[dict]
    matrix: np.ndarray  # (n, dim) float32, rows L2-normalised
    generation: int
    checked_at: float


def _scope_filter(masterplan_id: str | None, embedding_model: str) -> dict[str, Any]:
    if masterplan_id is None:
        return {"masterplan__isnull": True, "embedding_model": embedding_model}
    return {"masterplan_id": masterplan_id, "embedding_model": embedding_model}


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (matrix / norms).astype(np.float32, copy=False)


class DocumentStore:
    """Top-k cosine search over ``Document`` rows. Collaborators are injectable for tests."""

    def __init__(
        self,
        *,
        embedder: Embedder | None = None,
        refresh_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._embedder = embedder
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # At most DOCUMENT_SCOPES_MAX scopes (masterplans queried) are held in memory.
        self._scopes: LRU[tuple[str | None, str], _Snapshot] = LRU(lambda: int(conf.get("DOCUMENT_SCOPES_MAX")))
        self.loads = 0  # matrices (re)built; tests and the admin can watch it

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = load_embedder()
        return self._embedder

    @property
    def refresh_seconds(self) -> float:
        return float(conf.get("DOCUMENT_REFRESH_SECONDS") if self._refresh is None else self._refresh)

    def invalidate(self) -> None:
        """Forget every in-memory matrix; the next search reloads from the database."""
        with self._lock:
            self._scopes.clear()

    # --- reading -------------------------------------------------------------------------
    def _snapshot(self, masterplan_id: str | None, embedding_model: str) -> _Snapshot:
        key = (masterplan_id, embedding_model)
        now = self._clock()
        generation = _generation.value
        snap = self._scopes.peek(key)  # read without the lock (one dict lookup); recency is marked under it
        if snap is not None and snap.generation == generation and now - snap.checked_at < self.refresh_seconds:
            with self._lock:
                self._scopes.touch(key)
            return snap
        # No lock is held across database reads: a sync search inside an event loop and an
        # asearch on the ORM thread could otherwise wait on each other. Two concurrent
        # reloads of one scope are harmless; the last one wins.
        filters = _scope_filter(masterplan_id, embedding_model)
        fingerprint = run_orm(lambda: self._fingerprint(filters))
        if snap is not None and snap.fingerprint == fingerprint:
            snap = replace(snap, generation=generation, checked_at=now)
        else:
            snap = run_orm(lambda: self._load(filters, fingerprint, generation, now))
            with self._lock:
                self.loads += 1
        with self._lock:
            self._scopes.put(key, snap)
        return snap

    @staticmethod
    def _fingerprint(filters: dict[str, Any]) -> tuple:
        agg = Document.objects.filter(**filters).aggregate(n=Count("id"), max_id=Max("id"), changed=Max("updated_at"))
        return (agg["n"], agg["max_id"], agg["changed"].isoformat() if agg["changed"] else None)

    @staticmethod
    def _load(filters: dict[str, Any], fingerprint: tuple, generation: int, now: float) -> _Snapshot:
        rows = list(Document.objects.filter(**filters).values_list("id", "content", "metadata", "embedding"))
        ids: list[int] = []
        contents: list[str] = []
        metadata: list[dict] = []
        vectors: list[np.ndarray] = []
        dim = None
        for pk, content, meta, blob in rows:
            vector = np.frombuffer(bytes(blob), dtype="<f4")
            dim = dim or vector.size
            if vector.size != dim or dim == 0:
                logger.warning("Document %s has a %d-d embedding in a %s-d scope; skipped", pk, vector.size, dim)
                continue
            ids.append(pk)
            contents.append(content)
            metadata.append(meta or {})
            vectors.append(vector)
        matrix = _normalise_rows(np.vstack(vectors)) if vectors else np.zeros((0, 0), dtype=np.float32)
        return _Snapshot(fingerprint, np.asarray(ids, dtype=np.int64), contents, metadata, matrix, generation, now)

    def search(
        self,
        query_embedding: Any,
        *,
        top_k: int = 5,
        masterplan_id: Any = None,
        embedding_model: str | None = None,
    ) -> list[dict[str, Any]]:
        """The ``top_k`` most similar documents of one scope, best first.

        Each result is ``{"id", "content", "metadata", "score"}`` (score: cosine similarity).
        ``masterplan_id=None`` searches the global corpus (documents with no masterplan);
        ``embedding_model`` defaults to the configured embedder's ``model_name``.
        """
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        scope = keys.normalize_masterplan_id(masterplan_id)
        model = embedding_model or self.embedder.model_name
        query = np.asarray(query_embedding, dtype=np.float32).reshape(-1)
        snap = self._snapshot(scope, model)
        if not len(snap.ids):
            return []
        if query.size != snap.matrix.shape[1]:
            raise ValueError(
                f"query embedding has {query.size} dimensions but the {model!r} documents have {snap.matrix.shape[1]}"
            )
        norm = float(np.linalg.norm(query))
        if norm == 0:
            return []
        scores = snap.matrix @ (query / norm)
        k = min(top_k, scores.size)
        best = np.argpartition(-scores, k - 1)[:k]
        # Highest score first; equal scores in insertion (id) order, so results are deterministic.
        best = best[np.lexsort((snap.ids[best], -scores[best]))]
        return [
            {
                "id": int(snap.ids[i]),
                "content": snap.contents[i],
                "metadata": snap.metadata[i],
                "score": float(scores[i]),
            }
            for i in best
        ]

    async def asearch(self, query_embedding: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """:meth:`search` for async callers: runs on the ORM thread, the loop stays free."""
        return await arun_orm(lambda: self.search(query_embedding, **kwargs))

    def search_text(self, query: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Embed ``query`` with this store's embedder, then :meth:`search`."""
        return self.search(self.embedder.embed([query])[0], embedding_model=self.embedder.model_name, **kwargs)

    # --- writing -------------------------------------------------------------------------
    def add(
        self,
        documents: Iterable[tuple[str, dict[str, Any]]],
        *,
        masterplan_id: Any = None,
        batch_size: int = 64,
        progress: Callable[[int], object] | None = None,
    ) -> int:
        """Embed ``(content, metadata)`` pairs in batches and insert them in one transaction.

        All or nothing: an embedding or database error inserts none. ``progress(n)`` is
        called after each embedded batch. Returns the number of documents inserted.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        scope = keys.normalize_masterplan_id(masterplan_id)
        items = list(documents)
        embedder = self.embedder
        rows: list[Document] = []
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            vectors = embedder.embed([content for content, _ in batch])
            for (content, meta), vector in zip(batch, vectors, strict=True):
                doc = Document(
                    masterplan_id=scope, content=content, metadata=meta or {}, embedding_model=embedder.model_name
                )
                doc.set_embedding(vector)
                rows.append(doc)
            if progress is not None:
                progress(len(batch))
        with transaction.atomic():
            Document.objects.bulk_create(rows, batch_size=500)
            notify_changed(scope)  # bulk_create sends no post_save
        return len(rows)


def embed_document(document: Document, *, content_changed: bool, embedder: Embedder | None = None) -> None:
    """The vector follows the text: (re-)embed ``document`` if its content changed or it has no vector yet.

    ``embedder`` defaults to the configured one. The caller saves the document.
    """
    if not content_changed and document.embedding:
        return
    embedder = embedder or load_embedder()
    document.set_embedding(embedder.embed([document.content])[0])
    document.embedding_model = embedder.model_name


# --- document files (manage.py load_documents) ----------------------------------------------


class DocumentFileError(ValueError):
    """A document file or folder that cannot be loaded; the message names the file (and line)."""


def read_documents(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(content, metadata)`` pairs from a JSONL file or a folder of ``*.txt`` files, all validated.

    JSONL: one object per line, ``content`` (a non-empty string), ``metadata`` (an object,
    optional); any other keys are folded into metadata. A folder: each ``*.txt`` file
    (recursively, sorted) is one document, with ``{"source": <relative path>, "title": <stem>}``.
    Raises DocumentFileError, before anything is embedded, for the first problem found.
    """
    if not path.exists():
        raise DocumentFileError(f"{path} does not exist.")
    documents = _read_text_folder(path) if path.is_dir() else _read_jsonl(path)
    if not documents:
        what = "no non-empty .txt files" if path.is_dir() else "no documents"
        raise DocumentFileError(f"{path}: {what} to load.")
    return documents


def _read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DocumentFileError(f"{path}: not UTF-8 text ({exc})") from None
    return [_jsonl_record(line, f"{path}, line {number}") for number, line in enumerate(lines, start=1) if line.strip()]


def _jsonl_record(line: str, where: str) -> tuple[str, dict[str, Any]]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DocumentFileError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise DocumentFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    content = record.pop("content", None)
    if not isinstance(content, str) or not content.strip():
        raise DocumentFileError(f"{where}: 'content' must be a non-empty string")
    metadata = record.pop("metadata", {})
    if not isinstance(metadata, dict):
        raise DocumentFileError(f"{where}: 'metadata' must be a JSON object")
    return content, {**record, **metadata}


def _read_text_folder(folder: Path) -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for file in sorted(folder.rglob("*.txt")):
        if not file.is_file():
            continue
        try:
            content = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentFileError(f"{file}: not UTF-8 text ({exc})") from None
        if content.strip():
            documents.append((content.strip(), {"source": str(file.relative_to(folder)), "title": file.stem}))
    return documents


@process_wide
def get_document_store() -> DocumentStore:
    """The process-wide store (one set of in-memory matrices per process)."""
    return DocumentStore()
