"""Answering one batch of a wave: the Celery task's work, on a worker."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from batching_app.batcher import StaticBatchPolicy
from batching_app.llm import TRANSIENT_ERRORS
from batching_app.waves.spec import (
    DEADLINE_EXCEEDED,
    FAILED,
    PENDING,
    AtomSpec,
    WaveMeta,
    failure_result,
    success_result,
)
from batching_app.waves.store import WaveStore
from cache_app.core.counters import DurableCounters, get_counters
from cache_app.core.policies import BatchSettings, get_policy_source
from cache_app.llm.client import LLMClient
from cache_app.llm.loop import run_sync

# After the deadline, how long a batch task may still wait for calls in flight to end.
CLOSE_MARGIN_SECONDS = 30.0


# --- answering one batch (the Celery task's work, on a worker) ------------------------------------


@dataclass
class BatchOutcome:
    """What one run of a batch did. ``retry_after``: run again in that many seconds."""

    wave_id: str
    batch_no: int
    final: dict[str, int] = field(default_factory=dict)
    transient: int = 0
    retry_after: float | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "wave_id": self.wave_id,
            "batch_no": self.batch_no,
            "final": self.final,
            "transient": self.transient,
            "retry_after": self.retry_after,
        }


def default_client_factory(batch: BatchSettings) -> LLMClient:
    """A client for one batch: the configured provider, prompt cache and ledger; this batch's size."""
    return LLMClient(policies=StaticBatchPolicy(batch))


class WaveBatchExecutor:
    """Answers the pending atoms of one batch of a wave; idempotent per atom.

    The batcher's size is the batch's number of distinct prompts, so a batch goes out as one
    combined call as soon as all of them have arrived (the policy's window only matters if
    some never do, e.g. a single-flight follower of another process).
    """

    def __init__(
        self,
        *,
        store: WaveStore | None = None,
        policies: Any = None,
        client_factory: Callable[[BatchSettings], LLMClient] | None = None,
        clock: Callable[[], float] = time.time,
        counters: Any = None,
    ) -> None:
        self.store = store or WaveStore()
        self._policies = policies
        self._client_factory = client_factory or default_client_factory
        self._clock = clock
        self._counters = counters

    @property
    def counters(self) -> DurableCounters:
        return self._counters or get_counters()

    def run(self, wave_id: str, batch_no: int, *, retries: int = 0, final: bool = True) -> BatchOutcome:
        outcome = BatchOutcome(wave_id, batch_no)
        try:
            self._run(outcome, retries=retries, final=final)
        finally:
            # Statistics are read by other processes: do not leave this batch's counts buffered.
            self.counters.flush()
        return outcome

    def _run(self, outcome: BatchOutcome, *, retries: int, final: bool) -> None:
        loaded = self.store.load_batch(outcome.wave_id, outcome.batch_no)
        if loaded is None:
            return  # expired or unknown: nothing to answer, nobody to tell
        meta, atoms, statuses = loaded
        todo = [a for a in atoms if statuses.get(a.index) == PENDING]
        remaining = meta.deadline - self._clock()
        if not todo:
            return
        if remaining <= 0:
            self._fail(outcome, todo, DEADLINE_EXCEEDED)
            return
        attempt = self.store.attempt(outcome.wave_id, outcome.batch_no)
        if attempt == 0:
            return
        # On the process's client loop: its Redis connections are reused from one task to the next.
        transient, late = run_sync(
            self._answer(outcome, meta, todo, lookup=attempt > 1, timeout=remaining),
            timeout=remaining + CLOSE_MARGIN_SECONDS,
        )
        # What the deadline cut short (cancelled in flight) is final now.
        self._fail(outcome, [a for a in todo if a.index in late], DEADLINE_EXCEEDED)
        left = [a for a in todo if a.index in transient]
        outcome.transient = len(left)
        remaining = meta.deadline - self._clock()
        backoff = min(60.0, 2.0**retries) * random.uniform(0.5, 1.0)
        if left and not final and backoff < remaining:
            outcome.retry_after = backoff  # the re-run looks these atoms up again first
            return
        for atom in left:
            self._fail(outcome, [atom], transient[atom.index])

    def _finish(self, wave_id: str, results: list[tuple[int, str, Any]]) -> int:
        """Mark atoms final once this process's counts are in Redis (each atom's call and write are
        counted before its coroutine gets here): a caller that sees its wave done (``wait=true``
        answers then) reads statistics that include them, from any process."""
        self.counters.flush()
        return self.store.mark(wave_id, results)

    def _fail(self, outcome: BatchOutcome, atoms: Sequence[AtomSpec], error: BaseException | str) -> None:
        moved = self._finish(outcome.wave_id, [(a.index, *failure_result(error)) for a in atoms])
        if moved:
            outcome.final[FAILED] = outcome.final.get(FAILED, 0) + moved

    async def _answer(
        self, outcome: BatchOutcome, meta: WaveMeta, todo: Sequence[AtomSpec], *, lookup: bool, timeout: float
    ) -> tuple[dict[int, BaseException], set[int]]:
        """Answer ``todo`` concurrently; returns (transient errors, atoms cut short by the deadline).

        An infrastructure error (recording an outcome failed) is raised once every atom is
        done, so the task is retried; the prompt cache keeps what was answered.
        """
        live = (self._policies or get_policy_source()).batch()
        distinct = len({a.identity() for a in todo})
        client = self._client_factory(BatchSettings(live.enabled, max(1, distinct), live.batch_window_ms))
        transient: dict[int, BaseException] = {}

        async def one(atom: AtomSpec) -> None:
            try:
                response = await client.generate(
                    atom.prompt,
                    atom.params.model,
                    atom.params.temperature,
                    max_tokens=atom.params.max_tokens,
                    system=atom.params.system,
                    use_batching=True,
                    atom_id=atom.atom_id,
                    masterplan_id=uuid.UUID(meta.masterplan_id),
                    lookup=lookup,
                )
            except TRANSIENT_ERRORS as exc:
                transient[atom.index] = exc
                return
            except Exception as exc:  # this atom alone fails; the wave goes on
                status, result = failure_result(exc)
            else:
                status, result = success_result(response)
            # In a thread: through a failover the store retries for seconds, and the loop must go on.
            if await asyncio.to_thread(self._finish, outcome.wave_id, [(atom.index, status, result)]):
                outcome.final[status] = outcome.final.get(status, 0) + 1

        tasks = {asyncio.ensure_future(one(atom)): atom.index for atom in todo}
        try:
            done, late = await asyncio.wait(tasks, timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        finally:
            await client.aclose()
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return transient, {tasks[task] for task in late}
