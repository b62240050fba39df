"""Request batching: concurrent prompts become one upstream LLM call.

A batch collects requests until it holds ``max_batch_size`` distinct prompts or until
``batch_window_ms`` have passed since its first request, whichever comes first. It is
then handed to its own send task, so the next batch collects while earlier ones are in
flight. Identical prompts in one window share a slot: sent once, answered to every caller.

Failure semantics (docs/batching.md):

* the combined call fails -> every caller in that batch gets the exception;
* an answer that cannot be attributed (missing, empty, duplicated, cut short) -> that
  atom alone is re-sent on its own; nothing is padded;
* forming or parsing a batch fails (a bug) -> its atoms are sent one by one;
* a caller cancelled before its batch is sent is removed from it, and only it;
* whatever happens, every future is resolved: the send task's ``finally`` sets an
  error on anything still pending, and no exception escapes into shared state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from cache_app.core import metrics
from cache_app.core.counters import get_counters
from cache_app.core.policies import (
    DEFAULT_BATCH,
    DEFAULT_LAYERS,
    BatchSettings,
    LayerPolicy,
    PolicySource,
    get_policy_source,
)
from cache_app.llm import prompt_format
from cache_app.llm.prompt_format import BatchedRequest

logger = logging.getLogger(__name__)

# The durable counters' hash of batch figures (read by cache_app.statistics and the console).
BATCH_COUNTERS = "batch"
LLMCall = Callable[[str], Awaitable[str]]
Sleep = Callable[[float], Awaitable[Any]]

__all__ = ["BatchedRequest", "BatcherClosedError", "RequestBatcher", "StaticBatchPolicy"]


class BatcherClosedError(RuntimeError):
    """The batcher was closed; no new requests are accepted."""


class BatchLostError(RuntimeError):
    """A batch ended without answering this request (a bug; reported rather than hanging)."""


@dataclass(eq=False)
class _Slot:
    """One distinct prompt in a batch and every caller waiting for it."""

    lead: BatchedRequest
    requests: list[BatchedRequest]

    def live(self) -> bool:
        return any(not r.future.done() for r in self.requests)


@dataclass(eq=False)
class _Batch:
    opened_at: float
    loop: asyncio.AbstractEventLoop
    slots: dict[str, _Slot] = field(default_factory=dict)
    timer: asyncio.Task | None = None
    sent: bool = False


class StaticBatchPolicy:
    """A PolicySource with a fixed batch policy (default layer policies), for scripts without a database."""

    def __init__(self, settings: BatchSettings = DEFAULT_BATCH) -> None:
        self.settings = settings

    def layer(self, name: str) -> LayerPolicy:
        return DEFAULT_LAYERS.get(name) or LayerPolicy(layer=name)

    def llm(self) -> LayerPolicy:
        return self.layer("llm")

    def rag(self) -> LayerPolicy:
        return self.layer("rag")

    def batch(self) -> BatchSettings:
        return self.settings

    def invalidate(self) -> None:
        pass


class RequestBatcher:
    """Batches concurrent ``execute_with_batching`` calls into combined upstream calls.

    ``llm_call`` is an async callable, prompt -> text. ``max_batch_size`` and
    ``batch_window_ms`` of None are read live from ``BatchPolicy`` (``policies``,
    default the process-wide source), as is ``enabled``: disabled means one upstream
    call per request. ``clock`` (monotonic seconds) and ``sleep`` (the window timer)
    are injectable so tests control time instead of waiting for it.

    Every batch sent is counted in the durable ``batch`` counters (``batches``, and
    ``requests``: the distinct prompts it carried), globally and for ``masterplan_id``
    if given; the statistics endpoint reads them.
    """

    def __init__(
        self,
        llm_call: LLMCall,
        *,
        max_batch_size: int | None = None,
        batch_window_ms: int | None = None,
        clock: Callable[[], float] | None = None,
        policies: PolicySource | None = None,
        sleep: Sleep | None = None,
        masterplan_id: Any = None,
        counters: Any = None,
    ) -> None:
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if batch_window_ms is not None and batch_window_ms < 0:
            raise ValueError("batch_window_ms must be >= 0")
        self._llm_call = llm_call
        self._max_batch_size = max_batch_size
        self._batch_window_ms = batch_window_ms
        self._clock = clock or time.monotonic
        self._sleep = sleep or asyncio.sleep
        self._policies = policies
        self._masterplan_id = masterplan_id
        self._counters = counters
        self._last_settings: BatchSettings = DEFAULT_BATCH
        self._collecting: _Batch | None = None
        self._tasks: set[asyncio.Task] = set()
        self._closed = False

    # --- public API ---------------------------------------------------------------------

    async def execute_with_batching(self, atom_id: UUID, prompt: str) -> str:
        """The answer to ``prompt``, sent alone or in a batch with concurrent requests."""
        if self._closed:
            raise BatcherClosedError("RequestBatcher is closed")
        if not isinstance(prompt, str):
            raise TypeError("prompt must be a str")
        atom = atom_id if isinstance(atom_id, UUID) else UUID(str(atom_id))
        settings = self._settings()
        if not settings.enabled:
            return await self._pass_through(prompt)
        request = BatchedRequest(atom, prompt, asyncio.get_running_loop().create_future(), self._clock())
        self._enqueue(request, settings)
        try:
            return await request.future
        except asyncio.CancelledError:
            self._withdraw(request)
            raise

    async def flush(self) -> None:
        """Send the collecting batch now (does not wait for its answer)."""
        batch = self._collecting
        if batch is not None:
            self._flush(batch)
        await asyncio.sleep(0)  # let the send task start

    async def aclose(self) -> None:
        """Send what is pending, wait for every batch in flight, then refuse new requests."""
        self._closed = True
        if self._collecting is not None:
            self._flush(self._collecting)
        loop = asyncio.get_running_loop()
        while True:
            mine = [task for task in self._tasks if task.get_loop() is loop and not task.done()]
            if not mine:
                break
            await asyncio.gather(*mine, return_exceptions=True)

    @property
    def pending(self) -> int:
        """Requests waiting in the collecting batch (not yet sent)."""
        batch = self._collecting
        return 0 if batch is None else sum(len(s.requests) for s in batch.slots.values())

    # --- collecting -------------------------------------------------------------------------

    def _settings(self) -> BatchSettings:
        try:
            live = (self._policies or get_policy_source()).batch()
            self._last_settings = live
        except Exception:  # a policy read must never take batching down
            logger.warning("could not read BatchPolicy; using the last known values", exc_info=True)
            live = self._last_settings
        return BatchSettings(
            enabled=live.enabled,
            max_batch_size=max(1, self._max_batch_size if self._max_batch_size is not None else live.max_batch_size),
            batch_window_ms=max(
                0, self._batch_window_ms if self._batch_window_ms is not None else live.batch_window_ms
            ),
        )

    def _enqueue(self, request: BatchedRequest, settings: BatchSettings) -> None:
        loop = asyncio.get_running_loop()
        batch = self._collecting
        if batch is not None and batch.loop is not loop:
            # Left behind by an event loop that has ended (one batcher reused across
            # asyncio.run calls): its timer will never fire, so never join it.
            batch.sent = True
            batch = self._collecting = None
        if batch is None:
            batch = _Batch(opened_at=request.enqueued_at, loop=loop)
            self._collecting = batch
            batch.timer = self._spawn(self._window_timer(batch, settings.batch_window_ms / 1000.0))
        slot = batch.slots.get(request.prompt)
        if slot is None:
            batch.slots[request.prompt] = _Slot(lead=request, requests=[request])
        else:
            slot.requests.append(request)
            metrics.BATCH_DEDUPLICATED.inc()
            self._count("deduplicated", 1)
        if len(batch.slots) >= settings.max_batch_size:
            self._flush(batch)

    async def _window_timer(self, batch: _Batch, seconds: float) -> None:
        try:
            await self._sleep(seconds)
        except asyncio.CancelledError:
            return  # flushed on size (or closed) before the window ended
        except Exception:  # a broken timer must not strand the batch: send it now
            logger.exception("batch window timer failed; sending the batch now")
        if not batch.sent:
            self._flush(batch)

    def _withdraw(self, request: BatchedRequest) -> None:
        """A caller was cancelled: drop its item if its batch has not been sent yet."""
        batch = self._collecting
        if batch is None or batch.sent:
            return
        slot = batch.slots.get(request.prompt)
        if slot is None or request not in slot.requests:
            return
        slot.requests.remove(request)
        if not slot.requests:
            del batch.slots[request.prompt]
        elif slot.lead is request:
            slot.lead = slot.requests[0]
        if not batch.slots:
            # Nothing left to send: discard the batch and its timer.
            batch.sent = True
            self._collecting = None
            if batch.timer is not None:
                batch.timer.cancel()

    def _flush(self, batch: _Batch) -> None:
        if batch.sent:
            return
        batch.sent = True
        if self._collecting is batch:
            self._collecting = None
        if batch.timer is not None and batch.timer is not asyncio.current_task():
            batch.timer.cancel()
        slots = [slot for slot in batch.slots.values() if slot.live()]
        if slots:
            self._spawn(self._send(slots))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)  # a strong reference until done
        task.add_done_callback(self._tasks.discard)
        return task

    # --- sending -----------------------------------------------------------------------------

    async def _send(self, slots: list[_Slot]) -> None:
        try:
            await self._send_batch(slots)
        except asyncio.CancelledError:
            for slot in slots:
                for request in slot.requests:
                    request.future.cancel()
            raise
        except Exception as exc:
            # The combined call failed (or a bug below): everyone in this batch gets it.
            for slot in slots:
                _fail(slot, exc)
        finally:
            for slot in slots:
                _fail(slot, BatchLostError("the batch ended without an answer for this request"))

    async def _send_batch(self, slots: list[_Slot]) -> None:
        now = self._clock()
        for slot in slots:
            for request in slot.requests:
                metrics.BATCH_WAIT_SECONDS.observe(max(0.0, now - request.enqueued_at))
        metrics.BATCH_SIZE.observe(len(slots))
        self._count_batch(len(slots))
        if len(slots) == 1:
            # A batch of one is the plain prompt, no wrapper.
            _resolve(slots[0], await self._timed_call(slots[0].lead.prompt))
            return
        leads = [slot.lead for slot in slots]
        try:
            combined = prompt_format.combine_prompts(leads)
        except Exception:
            logger.exception("could not combine a batch of %d prompts; sending them one by one", len(slots))
            await self._send_alone(slots)
            return
        text = await self._timed_call(combined)
        try:
            answers = prompt_format.analyse_batched_response(text, leads).answers
        except Exception:
            logger.exception("could not parse a batched response; re-sending its %d prompts alone", len(slots))
            answers = [None] * len(slots)
        retry: list[_Slot] = []
        for slot, answer in zip(slots, answers, strict=True):
            if answer is None:
                retry.append(slot)
            else:
                _resolve(slot, answer)
        if retry:
            await self._send_alone(retry)

    async def _send_alone(self, slots: list[_Slot]) -> None:
        """Re-send each atom on its own; one atom's failure reaches only its callers."""

        async def one(slot: _Slot) -> None:
            if not slot.live():
                return  # every caller gave up: do not pay for an answer nobody reads
            metrics.BATCH_PARSE_FALLBACKS.inc()
            self._count("parse_fallbacks", 1)
            try:
                answer = await self._llm_call(slot.lead.prompt)
            except Exception as exc:
                _fail(slot, exc)
            else:
                _resolve(slot, answer)

        await asyncio.gather(*(one(slot) for slot in slots))

    # --- durable counters (statistics) ------------------------------------------------------

    def _count(self, field: str, amount: int) -> None:
        try:
            (self._counters or get_counters()).incr("batch", field, amount, masterplan_id=self._masterplan_id)
        except Exception:  # counting must never break a batch
            logger.warning("could not count %s", field, exc_info=True)

    def _count_batch(self, distinct_prompts: int) -> None:
        """Batches, the prompts the provider received, and the size distribution (``size:<n>``)."""
        self._count("batches", 1)
        self._count("requests", distinct_prompts)
        self._count(f"size:{distinct_prompts}", 1)

    async def _timed_call(self, prompt: str) -> str:
        started = self._clock()
        try:
            return await self._llm_call(prompt)
        finally:
            metrics.BATCH_EXECUTION_SECONDS.observe(max(0.0, self._clock() - started))

    async def _pass_through(self, prompt: str) -> str:
        metrics.BATCH_SIZE.observe(1)
        self._count_batch(1)
        answer = await self._timed_call(prompt)
        metrics.BATCH_REQUESTS_PROCESSED.inc()
        return answer


def _resolve(slot: _Slot, answer: str) -> None:
    for request in slot.requests:
        if not request.future.done():
            request.future.set_result(answer)
            metrics.BATCH_REQUESTS_PROCESSED.inc()


def _fail(slot: _Slot, exc: BaseException) -> None:
    for request in slot.requests:
        if not request.future.done():
            request.future.set_exception(exc)
