"""The RAG query cache (issue 4). Design, key layout, memory and consistency: docs/rag_cache.md."""

from ..llm_cache import CacheUnavailableError
from .cache import HIT_FIELDS, LAYER, SIMILARITY_LAYER, RAGQueryCache
from .codec import CachedRAGResult, CorruptEntryError
from .index import RAGIndex, get_rag_index

__all__ = [
    "HIT_FIELDS",
    "LAYER",
    "SIMILARITY_LAYER",
    "CacheUnavailableError",
    "CachedRAGResult",
    "CorruptEntryError",
    "RAGIndex",
    "RAGQueryCache",
    "get_rag_index",
]
