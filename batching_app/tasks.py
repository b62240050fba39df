"""Celery tasks of the batching layer. Thin: the work is in :mod:`batching_app.waves`."""

from __future__ import annotations

from typing import Any

import redis
from celery import Task, shared_task

from batching_app import waves

MAX_RETRIES = 5


@shared_task(
    name="batching_app.tasks.run_wave_batch",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    # Redis hiccups: retried with backoff. Transient provider errors are retried by the task
    # itself (below) within the wave's deadline; answered atoms are never asked again.
    autoretry_for=(redis.RedisError,),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
)
def run_wave_batch(self: Task, wave_id: str, batch_no: int) -> dict[str, Any]:
    """Answer one batch of an LLM wave through the caches (see :mod:`batching_app.waves`).

    Takes ids only: the atoms are read from the wave's state in Redis, and each outcome is
    written back there, so any process can report the wave's progress.
    """
    # Eager runs (no broker) cannot wait for a countdown: their transient failures are final.
    final = bool(self.request.is_eager) or self.request.retries >= (self.max_retries or 0)
    outcome = waves.WaveBatchExecutor().run(str(wave_id), int(batch_no), retries=self.request.retries, final=final)
    if outcome.retry_after is not None:
        raise self.retry(countdown=outcome.retry_after)
    return outcome.as_json()
