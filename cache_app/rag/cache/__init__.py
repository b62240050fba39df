"""The RAG query cache. Design, key layout, memory and consistency: docs/rag_cache.md."""

from cache_app.core.layer import CacheUnavailableError, Lookup
from cache_app.core.tags import WriteToken
from cache_app.rag.cache.cache import HIT_FIELDS, LAYER, SIMILARITY_LAYER, RAGQueryCache
from cache_app.rag.cache.codec import CachedRAGResult, CorruptEntryError
from cache_app.rag.cache.index import RAGIndex, get_rag_index

__all__ = [
    "HIT_FIELDS",
    "LAYER",
    "SIMILARITY_LAYER",
    "CacheUnavailableError",
    "CachedRAGResult",
    "CorruptEntryError",
    "Lookup",
    "RAGIndex",
    "RAGQueryCache",
    "WriteToken",
    "get_rag_index",
]
