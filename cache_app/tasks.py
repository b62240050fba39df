"""Celery tasks of cache_app. Thin and idempotent: they take ids, build the domain object, call it.

Deleting dead keys twice is harmless (UNLINK of a missing key is a no-op), so acks_late
redelivery and retries are safe. Redis errors are retried with exponential backoff.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import shared_task

_RETRY = {
    "acks_late": True,
    "autoretry_for": (redis.RedisError, OSError),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 6,
}


@shared_task(name="cache_app.tasks.reclaim_dead_keys", **_RETRY)
def reclaim_dead_keys() -> dict[str, Any]:
    """Periodic sweep (CELERY_BEAT_SCHEDULE): delete invalidated entries of every cache layer."""
    from cache_app.llm.cache import LLMPromptCache
    from cache_app.rag.cache import RAGQueryCache

    return {"llm": LLMPromptCache().reclaim_dead_keys(), "rag": RAGQueryCache().reclaim_dead_keys()}


@shared_task(name="cache_app.tasks.reclaim_llm_dead_keys", **_RETRY)
def reclaim_llm_dead_keys() -> int:
    """Delete the dead LLM entries of every scope (after invalidate_all)."""
    from cache_app.llm.cache import LLMPromptCache

    return LLMPromptCache().reclaim_dead_keys()


@shared_task(name="cache_app.tasks.reclaim_llm_masterplan", **_RETRY)
def reclaim_llm_masterplan(masterplan_id: str | None) -> int:
    """Delete the dead LLM entries of one masterplan (None: the global scope) after an invalidation."""
    from cache_app.llm.cache import LLMPromptCache

    return LLMPromptCache().reclaim_masterplan(masterplan_id)


@shared_task(name="cache_app.tasks.reclaim_rag_masterplan", **_RETRY)
def reclaim_rag_masterplan(masterplan_id: str | None) -> int:
    """Delete the dead RAG entries and log segments of one masterplan (None: the global scope)."""
    from cache_app.rag.cache import RAGQueryCache

    return RAGQueryCache().reclaim_masterplan(masterplan_id)


@shared_task(name="cache_app.tasks.reclaim_rag_dead_keys", **_RETRY)
def reclaim_rag_dead_keys() -> int:
    """Delete the dead RAG entries and log segments of every scope (after invalidate_all, or periodically)."""
    from cache_app.rag.cache import RAGQueryCache

    return RAGQueryCache().reclaim_dead_keys()


@shared_task(name="cache_app.tasks.take_stats_snapshot", acks_late=True, ignore_result=True)
def take_stats_snapshot() -> int | None:
    """Every minute (CELERY_BEAT_SCHEDULE): one StatsSnapshot row for the admin dashboard; its id."""
    from cache_app.console.snapshots import take_snapshot

    snapshot = take_snapshot()
    return None if snapshot is None else snapshot.pk


@shared_task(name="cache_app.tasks.cleanup_stats_snapshots", acks_late=True, ignore_result=True)
def cleanup_stats_snapshots() -> int:
    """Hourly: delete snapshots older than MGECACHE['CONSOLE_SNAPSHOT_RETENTION_DAYS']."""
    from cache_app.console.snapshots import cleanup_snapshots

    return cleanup_snapshots()
