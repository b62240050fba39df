"""Celery tasks of the RAG cache: reclaim of invalidated entries. Thin and idempotent.

Registered under their historical names (``cache_app.tasks.*``) so queued messages stay valid;
``cache_app.tasks`` imports this module so that workers register them.
"""

from __future__ import annotations

from celery import shared_task

from cache_app.core.taskopts import TASK_RETRY


@shared_task(name="cache_app.tasks.reclaim_rag_masterplan", **TASK_RETRY)
def reclaim_rag_masterplan(masterplan_id: str | None) -> int:
    """Delete the dead RAG entries and log segments of one masterplan (None: the global scope)."""
    from cache_app.rag.cache import RAGQueryCache

    return RAGQueryCache().reclaim_masterplan(masterplan_id)


@shared_task(name="cache_app.tasks.reclaim_rag_dead_keys", **TASK_RETRY)
def reclaim_rag_dead_keys() -> int:
    """Delete the dead RAG entries and log segments of every scope (after invalidate_all, or periodically)."""
    from cache_app.rag.cache import RAGQueryCache

    return RAGQueryCache().reclaim_dead_keys()
