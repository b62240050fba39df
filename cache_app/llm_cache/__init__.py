"""The LLM prompt cache (issue 3). Design, key layout and operations: docs/llm_cache.md."""

from ..layer import CacheUnavailableError
from .cache import LAYER, LLMPromptCache
from .codec import CachedLLMResponse, CorruptEntryError, normalize_temperature

__all__ = [
    "LAYER",
    "CacheUnavailableError",
    "CachedLLMResponse",
    "CorruptEntryError",
    "LLMPromptCache",
    "normalize_temperature",
]
