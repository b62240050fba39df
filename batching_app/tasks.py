"""Celery tasks of the batching layer. Thin: the work is in :mod:`batching_app.wave` and :mod:`batching_app.waves`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import redis
from celery import Task, shared_task
from celery.result import AsyncResult
from django.conf import settings

from batching_app import waves
from batching_app.llm import TRANSIENT_ERRORS, get_llm_call
from batching_app.wave import BatchResultStore, ResultAddress, WaveBatchRunner, run_coroutine_sync
from cache_app.core import conf, keys
from cache_app.core.policies import get_policy_source

MAX_RETRIES = 5


@shared_task(
    name="batching_app.tasks.run_batch",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    # Transient provider errors and Redis hiccups: exponential backoff (1, 2, 4, ... s,
    # capped at 60 s) with full jitter, at most MAX_RETRIES times. Atoms answered before
    # the error are stored and skipped by the retry.
    autoretry_for=(*TRANSIENT_ERRORS, redis.RedisError),
    retry_backoff=True,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
)
def run_batch(
    self: Task,
    atom_ids: list[str],
    prompts: list[str],
    batch_id: str | None = None,
    masterplan_id: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Answer each (atom, prompt) once; answers land at each atom's ``ResultAddress``.

    Arguments are JSON-serialisable: atom ids as UUID strings, prompts as strings, in the
    same order; the masterplan (None: global) and the model (None: LLM_DEFAULT_MODEL) are
    part of every answer's address. Returns a summary (answers are read per address with
    ``BatchResultStore().get_many(...)``, never from this task's result).
    """
    if len(atom_ids) != len(prompts):
        raise ValueError("atom_ids and prompts must have the same length")
    atoms = [(uuid.UUID(str(a)), str(p)) for a, p in zip(atom_ids, prompts, strict=True)]
    batch_id = batch_id or self.request.id or uuid.uuid4().hex
    runner = WaveBatchRunner(
        get_llm_call(), store=BatchResultStore(), claim_seconds=float(settings.CELERY_TASK_TIME_LIMIT)
    )
    report = run_coroutine_sync(lambda: runner.run(atoms, batch_id=batch_id, masterplan_id=masterplan_id, model=model))
    failure = report.failure()
    if failure is not None:
        raise failure  # transient ones (BatchIncompleteError) are retried by autoretry_for
    if report.in_progress:
        # Another run holds these atoms; come back once its claim has run out (or it finished).
        raise self.retry(countdown=runner.retry_countdown(report, limit=float(settings.CELERY_TASK_TIME_LIMIT)))
    return report.as_json()


def dispatch_wave(
    atoms: Sequence[tuple[uuid.UUID | str, str]],
    *,
    masterplan_id: Any = None,
    model: str | None = None,
    batch_size: int | None = None,
    **apply_async_options: Any,
) -> list[AsyncResult]:
    """Send a wave as ``run_batch`` tasks of ``batch_size`` atoms (default: BatchPolicy.max_batch_size).

    Collect the answers with ``BatchResultStore().get_many(addresses)`` (see
    :func:`result_addresses`); the task results are summaries only.
    """
    if batch_size is None:
        policy = get_policy_source().batch()
        batch_size = policy.max_batch_size if policy.enabled else 1
    batch_size = max(1, int(batch_size))
    mp = keys.normalize_masterplan_id(masterplan_id)
    chosen = model or str(conf.get("LLM_DEFAULT_MODEL"))
    items = [(str(uuid.UUID(str(atom_id))), str(prompt)) for atom_id, prompt in atoms]
    results = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        results.append(
            run_batch.apply_async(
                args=([a for a, _ in chunk], [p for _, p in chunk]),
                kwargs={"masterplan_id": mp, "model": chosen},
                **apply_async_options,
            )
        )
    return results


def result_addresses(
    atoms: Sequence[tuple[uuid.UUID | str, str]], *, masterplan_id: Any = None, model: str | None = None
) -> list[ResultAddress]:
    """Where :func:`dispatch_wave` with the same arguments stores each atom's answer."""
    return [ResultAddress.for_request(a, p, masterplan_id=masterplan_id, model=model) for a, p in atoms]


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
