"""Submitting waves and reporting on them, from any process (the API's side)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from batching_app.waves.spec import (
    DEADLINE_EXCEEDED,
    MAX_DEADLINE_SECONDS,
    PENDING,
    AtomSpec,
    WaveMeta,
    WaveValidationError,
    build_atoms,
    failure_result,
    plan_batches,
    success_result,
)
from batching_app.waves.store import WaveStore, wave_report
from cache_app.core import conf, keys
from cache_app.core.counters import get_counters
from cache_app.core.policies import get_policy_source
from cache_app.core.taskopts import BrokerUnavailableError, send_task
from cache_app.llm.client import LLMClient, LLMResponse, get_llm_client
from cache_app.llm.loop import run_sync

logger = logging.getLogger(__name__)
LOOKUP_CONCURRENCY = 8


# --- submitting and reporting (any process) --------------------------------------------------------


def _dispatch_task(wave_id: str, batch_no: int, options: Mapping[str, Any]) -> None:
    from batching_app.tasks import run_wave_batch

    send_task(run_wave_batch, (wave_id, batch_no), dict(options))


class WaveService:
    """Submits waves and reports on them. Collaborators are injected; defaults are the process's own.

    ``clock`` is wall-clock epoch seconds (deadlines are shared between processes); ``sleep``
    is the polling wait of ``wait=True``; ``run`` runs a coroutine from this synchronous code
    (default: the LLM client's loop); ``dispatch(wave_id, batch_no)`` sends one batch (default:
    the Celery task, with ``task_options`` such as ``queue``); ``register`` registers the masterplan.
    """

    def __init__(
        self,
        *,
        client: LLMClient | None = None,
        store: WaveStore | None = None,
        policies: Any = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = time.sleep,
        run: Callable[[Coroutine[Any, Any, Any]], Any] | None = None,
        dispatch: Callable[[str, int], Any] | None = None,
        task_options: Mapping[str, Any] | None = None,
        register: Callable[[Any], Any] | None = None,
        counters: Any = None,
    ) -> None:
        self._client = client
        self.store = store or WaveStore()
        self._policies = policies
        self._clock = clock
        self._sleep = sleep
        self._run = run
        self._dispatch = dispatch
        self._task_options = dict(task_options or {})
        self._register = register
        self._counters = counters

    @property
    def client(self) -> LLMClient:
        return self._client if self._client is not None else get_llm_client()

    def _run_coroutine(self, coro: Coroutine[Any, Any, Any], timeout: float) -> Any:
        if self._run is not None:
            return self._run(coro)
        return run_sync(coro, timeout=timeout)

    def submit(
        self,
        masterplan_id: Any,
        atoms: Sequence[Any],
        *,
        defaults: Mapping[str, Any] | None = None,
        wait: bool = True,
        deadline_seconds: float | None = None,
    ) -> dict[str, Any]:
        """Start a wave; with ``wait``, return once every atom is final or the deadline passed.

        Raises :class:`WaveValidationError` (a ValueError) for bad input. Returns the report of
        :meth:`get`.
        """
        mp = keys.normalize_masterplan_id(masterplan_id)
        if mp is None:
            raise WaveValidationError({"masterplan_id": ["required"]})
        specs = build_atoms(defaults, atoms)
        seconds = _deadline_seconds(deadline_seconds)
        self._registrar()(mp)
        now = self._clock()
        meta = WaveMeta(str(uuid.uuid4()), mp, now, now + seconds, len(specs))
        self.store.create(meta, specs)
        hits = self._lookup_all(mp, specs, timeout=seconds)
        self.store.mark(meta.wave_id, [(index, *success_result(response)) for index, response in hits.items()])
        misses = [spec for spec in specs if spec.index not in hits]
        batches = plan_batches(misses, self._batch_size())
        self.store.set_batches(meta.wave_id, batches)
        counters = self._counters or get_counters()
        counters.incr("batch", "waves", 1, masterplan_id=mp)
        counters.incr("batch", "wave_atoms", len(specs), masterplan_id=mp)
        sent = [self._send(meta.wave_id, number, indexes) for number, indexes in enumerate(batches)]
        unsent = [error for error in sent if error is not None]
        counters.flush()  # other processes report statistics: do not leave the lookups buffered
        if batches and len(unsent) == len(batches) and isinstance(unsent[0], BrokerUnavailableError):
            raise unsent[0]  # nothing is in flight: the caller gets a 503 and retries (the record says why)
        if wait:
            return self.wait(meta.wave_id) or {}
        return self.get(meta.wave_id) or {}

    def _registrar(self) -> Callable[[Any], Any]:
        if self._register is not None:
            return self._register
        from cache_app.masterplans import ensure_masterplan_registered

        return ensure_masterplan_registered

    def _batch_size(self) -> int:
        policy = (self._policies or get_policy_source()).batch()
        return policy.max_batch_size if policy.enabled else 1

    def _lookup_all(self, mp: str, specs: Sequence[AtomSpec], *, timeout: float) -> dict[int, LLMResponse]:
        client = self.client

        async def lookups() -> list[Any]:
            # Bounded: a wave must not open hundreds of Redis connections at once.
            gate = asyncio.Semaphore(LOOKUP_CONCURRENCY)

            async def one(s: AtomSpec) -> LLMResponse | None:
                async with gate:
                    return await client.lookup(
                        s.prompt,
                        s.params.model,
                        s.params.temperature,
                        max_tokens=s.params.max_tokens,
                        system=s.params.system,
                        masterplan_id=uuid.UUID(mp),
                    )

            return await asyncio.gather(*(one(s) for s in specs), return_exceptions=True)

        try:
            found = self._run_coroutine(lookups(), timeout)
        except Exception:  # the cache fails open; so does the wave: everything is a miss
            logger.warning("wave cache lookups failed; treating every atom as a miss", exc_info=True)
            return {}
        hits: dict[int, LLMResponse] = {}
        for spec, result in zip(specs, found, strict=True):
            if isinstance(result, LLMResponse):
                hits[spec.index] = result
            elif isinstance(result, BaseException):
                logger.warning("cache lookup of a wave atom failed: %r", result)
        return hits

    def _send(self, wave_id: str, batch_no: int, indexes: Sequence[int]) -> Exception | None:
        """Send one batch; on failure mark its atoms failed and return the error."""
        try:
            if self._dispatch is not None:
                self._dispatch(wave_id, batch_no)
            else:
                _dispatch_task(wave_id, batch_no, self._task_options)
        except Exception as exc:  # broker down (or an eager task that raised): only this batch fails
            logger.warning("could not run batch %d of wave %s", batch_no, wave_id, exc_info=True)
            self.store.mark(
                wave_id, [(i, *failure_result(f"batch not run: {type(exc).__name__}: {exc}")) for i in indexes]
            )
            return exc
        return None

    def get(self, wave_id: Any) -> dict[str, Any] | None:
        """The wave's report (input order), or None if unknown or expired. Enforces the deadline."""
        wave_id = str(uuid.UUID(str(wave_id)))
        fields = self.store.read(wave_id)
        if fields is None:
            return None
        meta = WaveMeta.from_json(fields["meta"])
        if self._clock() >= meta.deadline and int(fields.get("done", 0)) < meta.size:
            pending = [i for i in range(meta.size) if fields.get(f"s:{i}") == PENDING]
            self.store.mark(wave_id, [(i, *failure_result(DEADLINE_EXCEEDED)) for i in pending])
            fields = self.store.read(wave_id) or fields
        return wave_report(fields)

    def wait(self, wave_id: Any, *, timeout: float | None = None) -> dict[str, Any] | None:
        """Poll until every atom is final, the deadline passes, or ``timeout``; then :meth:`get`."""
        wave_id = str(uuid.UUID(str(wave_id)))
        interval = 0.005
        started = self._clock()
        while True:
            progress = self.store.progress(wave_id)
            if progress is None:
                return None
            done, size, meta = progress
            now = self._clock()
            limit = meta.deadline if timeout is None else min(meta.deadline, started + timeout)
            if done >= size or now >= limit:
                return self.get(wave_id)
            self._sleep(min(interval, max(0.0, limit - now)))
            interval = min(interval * 2, 0.25)


def _deadline_seconds(value: float | None) -> float:
    seconds = float(conf.get("WAVE_DEADLINE_SECONDS") if value is None else value)
    if isinstance(value, bool) or not math.isfinite(seconds) or not 0 < seconds <= MAX_DEADLINE_SECONDS:
        raise WaveValidationError({"deadline_seconds": [f"a number of seconds in (0, {MAX_DEADLINE_SECONDS:g}]"]})
    return seconds


def run_wave(
    masterplan_id: Any,
    atoms: Sequence[Any],
    *,
    defaults: Mapping[str, Any] | None = None,
    wait: bool = True,
    deadline_seconds: float | None = None,
    task_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Submit a wave with the process's defaults (see :meth:`WaveService.submit`)."""
    service = WaveService(task_options=task_options)
    return service.submit(masterplan_id, atoms, defaults=defaults, wait=wait, deadline_seconds=deadline_seconds)


def get_wave(wave_id: Any) -> dict[str, Any] | None:
    """A wave's progress and per-atom results, from any process (None: unknown or expired)."""
    return WaveService().get(wave_id)
