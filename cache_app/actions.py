"""Operator actions, shared by the admin, the API and manage.py (thin callers, one function each).

Invalidation is logical and immediate (an O(1) generation bump per layer); the physical
deletion of the dead keys is handed to Celery (in-process on the embedded default), so an
operator's click never waits on a large SCAN.
"""

from __future__ import annotations

import logging
from typing import Any

from cache_app.core import keys
from cache_app.llm.cache import LLMPromptCache
from cache_app.rag.cache import RAGQueryCache

logger = logging.getLogger(__name__)

LAYERS = ("llm", "rag")


def _check_layers(layers: Any) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(layers))
    unknown = [layer for layer in chosen if layer not in LAYERS]
    if not chosen or unknown:
        raise ValueError(f"layers must be a non-empty subset of {', '.join(LAYERS)}; got {list(layers)!r}")
    return chosen


def invalidate_masterplan(masterplan_id: Any, *, layers: Any = LAYERS) -> dict[str, int]:
    """Make every cached answer of one masterplan unreachable in the chosen layers.

    Returns, per layer, the number of entries deleted inline (0 when deletion was deferred
    to Celery). Raises ValueError for a bad id or layer, and CacheUnavailableError when
    Redis cannot record the invalidation (the caller must tell the operator it failed).
    """
    normalized = keys.normalize_masterplan_id(masterplan_id)
    if normalized is None:
        raise ValueError("masterplan_id is required")
    chosen = _check_layers(layers)
    result: dict[str, int] = {}
    if "llm" in chosen:
        result["llm"] = LLMPromptCache().invalidate_masterplan(normalized, reclaim="celery")
    if "rag" in chosen:
        result["rag"] = RAGQueryCache().invalidate_masterplan(normalized, reclaim="celery")
    logger.info("invalidated masterplan %s in %s", normalized, ", ".join(chosen))
    return result


def invalidate_layers(layers: Any = LAYERS) -> dict[str, int]:
    """Make every entry of the chosen layers unreachable (never FLUSHDB: only this app's keys)."""
    chosen = _check_layers(layers)
    result: dict[str, int] = {}
    if "llm" in chosen:
        result["llm"] = LLMPromptCache().invalidate_all(reclaim="celery")
    if "rag" in chosen:
        result["rag"] = RAGQueryCache().invalidate_all(reclaim="celery")
    logger.info("invalidated cache layers %s", ", ".join(chosen))
    return result
