"""LLM waves: many atoms of one masterplan through the caches, the misses batched on Celery.

A wave is a masterplan id, generation defaults (model, temperature, max_tokens, system) and
atoms ``{atom_id, prompt, overrides?}``. :meth:`WaveService.submit`:

1. registers the masterplan and writes the wave's state to Redis (``keys.wave``), every atom
   ``pending``;
2. looks every atom up in the prompt cache through :meth:`LLMClient.lookup` (the path of
   ``llm/generate``, priced as saved); hits are final at once (``hit``);
3. groups the misses by generation parameters, keeps identical prompts together, and cuts
   each group into batches of at most ``BatchPolicy.max_batch_size`` distinct prompts;
4. sends each batch as a Celery ``run_wave_batch`` task (in parallel on the workers). The task
   answers its atoms with :meth:`LLMClient.generate` (single-flight merges the duplicates,
   the batcher makes one combined provider call, every answer is stored in the prompt cache
   and priced) and writes each atom's outcome to the wave state as it arrives;
5. with ``wait``, polls the wave state until every atom is final or the deadline passes.

Every atom ends ``hit``, ``answered`` or ``failed`` (with its error). A status only ever moves
from ``pending`` to a final one, atomically (Lua), so a late or repeated task cannot overwrite
an outcome. One failed atom never fails the wave. No atom stays pending past the wave's
deadline: the task gives up at the deadline, and any reader (:meth:`WaveService.get`, on any
process) marks what is still pending as failed with "deadline exceeded".

The prompt cache is the source of truth for answers: a re-run batch task (retry or
redelivery) looks its atoms up again and only calls the provider for what is still missing.
The wave state keeps a copy of each atom's result so it can be reported after the cache entry
has expired or been invalidated.

The package, in the order a wave goes through it: :mod:`.spec` (input, validation, batch
planning, outcomes), :mod:`.store` (the wave's state in Redis), :mod:`.service` (submitting
and reporting, any process), :mod:`.executor` (one batch, on a Celery worker).
"""

from batching_app.waves.executor import CLOSE_MARGIN_SECONDS, BatchOutcome, WaveBatchExecutor, default_client_factory
from batching_app.waves.service import LOOKUP_CONCURRENCY, WaveService, get_wave, run_wave
from batching_app.waves.spec import (
    ANSWERED,
    DEADLINE_EXCEEDED,
    FAILED,
    HIT,
    MAX_DEADLINE_SECONDS,
    MAX_ERROR_CHARS,
    MAX_MODEL_CHARS,
    MAX_TOKENS,
    OVERRIDE_FIELDS,
    PENDING,
    STATUSES,
    AtomSpec,
    GenerationParams,
    WaveMeta,
    WaveValidationError,
    build_atoms,
    failure_result,
    plan_batches,
    success_result,
)
from batching_app.waves.store import StoreOutage, WaveStore, get_store_outage

__all__ = [
    "ANSWERED",
    "CLOSE_MARGIN_SECONDS",
    "DEADLINE_EXCEEDED",
    "FAILED",
    "HIT",
    "LOOKUP_CONCURRENCY",
    "MAX_DEADLINE_SECONDS",
    "MAX_ERROR_CHARS",
    "MAX_MODEL_CHARS",
    "MAX_TOKENS",
    "OVERRIDE_FIELDS",
    "PENDING",
    "STATUSES",
    "AtomSpec",
    "BatchOutcome",
    "GenerationParams",
    "StoreOutage",
    "WaveBatchExecutor",
    "WaveMeta",
    "WaveService",
    "WaveStore",
    "WaveValidationError",
    "build_atoms",
    "default_client_factory",
    "failure_result",
    "get_store_outage",
    "get_wave",
    "plan_batches",
    "run_wave",
    "success_result",
]
