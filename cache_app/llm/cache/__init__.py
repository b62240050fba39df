"""The LLM prompt cache. Design, key layout and operations: docs/llm_cache.md."""

from cache_app.core.layer import CacheUnavailableError, Lookup
from cache_app.core.tags import WriteToken
from cache_app.llm.cache.cache import LAYER, LLMPromptCache
from cache_app.llm.cache.codec import CachedLLMResponse, CorruptEntryError, normalize_temperature

__all__ = [
    "LAYER",
    "CacheUnavailableError",
    "CachedLLMResponse",
    "CorruptEntryError",
    "LLMPromptCache",
    "Lookup",
    "WriteToken",
    "normalize_temperature",
]
