"""Celery tasks of cache_app. Thin and idempotent: they take ids, build the domain object, call it.

Deleting dead keys twice is harmless (UNLINK of a missing key is a no-op), so acks_late
redelivery and retries are safe. Redis errors are retried with exponential backoff.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from cache_app.core.taskopts import TASK_RETRY as _RETRY

# The per-layer reclaim tasks live beside their caches; importing them here registers them.
from cache_app.llm.cache.tasks import reclaim_llm_dead_keys, reclaim_llm_masterplan
from cache_app.rag.cache.tasks import reclaim_rag_dead_keys, reclaim_rag_masterplan

__all__ = [
    "reclaim_dead_keys",
    "reclaim_llm_dead_keys",
    "reclaim_llm_masterplan",
    "reclaim_rag_dead_keys",
    "reclaim_rag_masterplan",
]


@shared_task(name="cache_app.tasks.reclaim_dead_keys", **_RETRY)
def reclaim_dead_keys() -> dict[str, Any]:
    """Periodic sweep (CELERY_BEAT_SCHEDULE): delete invalidated entries of every cache layer."""
    from cache_app.llm.cache import LLMPromptCache
    from cache_app.rag.cache import RAGQueryCache

    return {"llm": LLMPromptCache().reclaim_dead_keys(), "rag": RAGQueryCache().reclaim_dead_keys()}
