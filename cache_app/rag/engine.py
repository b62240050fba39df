"""The pipeline's retrieval: embed the query, try the RAG query cache, else search the store.

``RAGEngine.query`` looks in the cache first (exact, then similar at the live policy
threshold), and on a miss searches the document store and caches the result under the
embedder's model name, so entries of different embedders never meet.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cache_app.core import keys
from cache_app.core.state import process_wide
from cache_app.rag.cache import RAGQueryCache
from cache_app.rag.documents import DocumentStore, get_document_store
from cache_app.rag.embedders import Embedder, load_embedder


@dataclass(frozen=True)
class RAGResult:
    documents: list[dict[str, Any]]  # each: content, metadata, score (and id from the store)
    cached: bool
    match: str | None  # "exact" | "similar" | None (a store search)
    similarity: float | None
    latency_s: float
    embedding_model: str = ""
    query: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class RAGEngine:
    """Collaborators are injected; defaults: the configured embedder, document store and RAG cache."""

    def __init__(
        self,
        *,
        embedder: Embedder | None = None,
        store: DocumentStore | None = None,
        cache: RAGQueryCache | None = None,
    ) -> None:
        self._embedder = embedder
        self._store = store
        self.cache = cache or RAGQueryCache()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self._store.embedder if self._store is not None else load_embedder()
        return self._embedder

    @property
    def store(self) -> DocumentStore:
        if self._store is None:
            self._store = get_document_store() if self._embedder is None else DocumentStore(embedder=self._embedder)
        return self._store

    def _prepare(
        self, query: Any, top_k: Any, masterplan_id: Any, query_embedding: Any = None
    ) -> tuple[np.ndarray, str | None]:
        if not isinstance(query, str) or not query.strip():
            raise ValueError("query must be a non-empty string")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
        mp = keys.normalize_masterplan_id(masterplan_id)
        if query_embedding is not None:
            return unit_vector(query_embedding, self.embedder.dim), mp
        embedding = np.asarray(self.embedder.embed([query])[0], dtype=np.float32)
        return embedding, mp

    def _result(self, query: str, started: float, cached: Any = None, documents: Any = None) -> RAGResult:
        if cached is not None:
            return RAGResult(
                documents=list(cached.documents),
                cached=True,
                match=cached.match,
                similarity=cached.similarity,
                latency_s=time.perf_counter() - started,
                embedding_model=self.embedder.model_name,
                query=query,
            )
        return RAGResult(
            documents=documents,
            cached=False,
            match=None,
            similarity=None,
            latency_s=time.perf_counter() - started,
            embedding_model=self.embedder.model_name,
            query=query,
        )

    def query(self, query: str, *, top_k: int = 5, masterplan_id: Any = None, query_embedding: Any = None) -> RAGResult:
        """Documents for ``query``, from the cache (exact or similar) or the store.

        ``query_embedding`` (optional) is the query's embedding by the configured embedder,
        computed by the caller: a vector of the embedder's dimension with finite values. A
        query without features (an all-zero embedding) matches nothing: no documents, uncached.
        Bad arguments raise ValueError.
        """
        started = time.perf_counter()
        embedding, mp = self._prepare(query, top_k, masterplan_id, query_embedding)
        if not embedding.any():
            return self._result(query, started, documents=[])
        model = self.embedder.model_name
        found = self.cache.lookup(query, embedding, embedding_model=model, top_k=top_k, masterplan_id=mp)
        if found.hit is not None:
            return self._result(query, started, cached=found.hit)
        documents = self.store.search(embedding, top_k=top_k, masterplan_id=mp, embedding_model=model)
        # The miss's token: refused if the scope is invalidated before the store answered.
        self.cache.set(
            query, embedding, documents, embedding_model=model, top_k=top_k, masterplan_id=mp, token=found.token
        )
        return self._result(query, started, documents=documents)

    async def aquery(
        self, query: str, *, top_k: int = 5, masterplan_id: Any = None, query_embedding: Any = None
    ) -> RAGResult:
        started = time.perf_counter()
        # Embedding is CPU-bound (a model for MiniLM): keep the event loop free.
        embedding, mp = await asyncio.to_thread(self._prepare, query, top_k, masterplan_id, query_embedding)
        if not embedding.any():
            return self._result(query, started, documents=[])
        model = self.embedder.model_name
        found = await self.cache.alookup(query, embedding, embedding_model=model, top_k=top_k, masterplan_id=mp)
        if found.hit is not None:
            return self._result(query, started, cached=found.hit)
        documents = await self.store.asearch(embedding, top_k=top_k, masterplan_id=mp, embedding_model=model)
        await self.cache.aset(
            query, embedding, documents, embedding_model=model, top_k=top_k, masterplan_id=mp, token=found.token
        )
        return self._result(query, started, documents=documents)


def unit_vector(values: Any, dim: int) -> np.ndarray:
    """``values`` (``dim`` finite numbers) scaled to unit length as float32; all zeros stay zeros.

    Scaled by the largest magnitude first, so neither huge nor tiny values overflow or vanish.
    Raises ValueError for a wrong dimension or a value that is not a finite number.
    """
    if isinstance(values, (str, bytes)) or (
        isinstance(values, (list, tuple)) and any(isinstance(v, bool) for v in values)
    ):
        raise ValueError("query_embedding must be a list of numbers")
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("query_embedding must be a list of numbers") from None
    if vector.ndim != 1 or vector.size != dim:
        raise ValueError(f"query_embedding must have {dim} dimensions (the embedder's), got shape {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError("query_embedding contains NaN or Inf")
    scale = float(np.abs(vector).max())
    if scale == 0.0:
        return np.zeros(dim, dtype=np.float32)
    scaled = vector / scale
    return (scaled / np.linalg.norm(scaled)).astype(np.float32)


@process_wide
def get_rag_engine() -> RAGEngine:
    """The process-wide engine on the configured embedder, store and cache."""
    return RAGEngine()
