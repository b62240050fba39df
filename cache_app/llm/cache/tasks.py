"""Celery tasks of the LLM cache: reclaim of invalidated entries. Thin and idempotent.

Registered under their historical names (``cache_app.tasks.*``) so queued messages stay valid;
``cache_app.tasks`` imports this module so that workers register them.
"""

from __future__ import annotations

from celery import shared_task

from cache_app.core.taskopts import TASK_RETRY


@shared_task(name="cache_app.tasks.reclaim_llm_dead_keys", **TASK_RETRY)
def reclaim_llm_dead_keys() -> int:
    """Delete the dead LLM entries of every scope (after invalidate_all)."""
    from cache_app.llm.cache import LLMPromptCache

    return LLMPromptCache().reclaim_dead_keys()


@shared_task(name="cache_app.tasks.reclaim_llm_masterplan", **TASK_RETRY)
def reclaim_llm_masterplan(masterplan_id: str | None) -> int:
    """Delete the dead LLM entries of one masterplan (None: the global scope) after an invalidation."""
    from cache_app.llm.cache import LLMPromptCache

    return LLMPromptCache().reclaim_masterplan(masterplan_id)
