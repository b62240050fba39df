"""Celery tasks of cache_app. Thin and idempotent: they take ids, build the domain object, call it.

Deleting dead keys twice is harmless (UNLINK of a missing key is a no-op), so acks_late
redelivery and retries are safe. Redis errors are retried with exponential backoff.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Task, shared_task

from cache_app.core.layer import CacheUnavailableError
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


@shared_task(
    name="cache_app.tasks.perform_invalidation",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(redis.RedisError, OSError, CacheUnavailableError),
    retry_backoff=2,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=6,
)
def perform_invalidation(self: Task, audit_id: str) -> dict[str, Any]:
    """Carry out one recorded invalidation (an ``InvalidationAudit`` id); a redelivery does nothing twice.

    Redis failures are retried with backoff; the last attempt records the failure on the row.
    Eager runs (no broker) cannot wait for a countdown, so their first attempt is the last.
    """
    from cache_app import actions

    final = bool(self.request.is_eager) or self.request.retries >= (self.max_retries or 0)
    audit = actions.perform_invalidation(audit_id, final=final)
    if audit is None:
        return {"id": str(audit_id), "status": "missing", "keys_removed": 0}
    return {"id": str(audit.pk), "status": audit.status, "keys_removed": audit.keys_removed}


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
