"""The Celery wave path's domain logic: answer a list of atoms exactly once each.

Each atom's answer is stored under its own key the moment it arrives, so a redelivered
or retried task skips atoms already answered and the LLM is never called twice for them.
The key is the atom's :class:`ResultAddress`: the atom id, the masterplan, and a digest
of the request (prompt, model, parameters). The same atom id sent with another prompt
has another address: it never reads, and never overwrites, the first one's answer.

An atom being answered right now by another run is *claimed* (a lock on its address,
SET NX with a TTL) and skipped here; the task retries later for it. Results are read
back per address (:meth:`BatchResultStore.get_many`): no chord, no callback to lose.

Redis is this path's delivery mechanism, so unlike the caches it does not fail open:
a Redis error propagates and the task is retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID, uuid4

from redis import Redis

from batching_app.batcher import RequestBatcher
from batching_app.llm import TRANSIENT_ERRORS, LLMCall, TransientLLMError
from cache_app.core import conf, keys
from cache_app.core.counters import get_counters
from cache_app.core.redis_client import get_redis

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Compare-and-delete: release a claim only if this run still owns it.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def request_digest(prompt: str, model: str, params: Mapping[str, Any] | None = None) -> str:
    """SHA-256 of everything that decides an atom's answer."""
    return keys.digest({"prompt": prompt, "model": model, "params": dict(params or {})})


@dataclass(frozen=True)
class ResultAddress:
    """Where one atom's answer lives: (atom id, masterplan, request digest)."""

    atom_id: UUID
    masterplan_id: str | None
    digest: str

    @classmethod
    def for_request(
        cls,
        atom_id: UUID | str,
        prompt: str,
        *,
        masterplan_id: Any = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> ResultAddress:
        chosen = model or str(conf.get("LLM_DEFAULT_MODEL"))
        return cls(
            UUID(str(atom_id)), keys.normalize_masterplan_id(masterplan_id), request_digest(prompt, chosen, params)
        )

    @property
    def key(self) -> str:
        return keys.batch_result(self.atom_id, self.masterplan_id, self.digest)

    @property
    def claim_key(self) -> str:
        return claim_key(self)


def claim_key(address: ResultAddress) -> str:
    return keys.lock(f"batch-atom:{keys.scope(address.masterplan_id)}:{address.atom_id}:{address.digest}")


class BatchResultStore:
    """Per-address answers in Redis: ``{"atom_id", "answer", "batch_id", "stored_at"}`` as JSON."""

    def __init__(self, redis: Redis | None = None, *, ttl_seconds: int | None = None) -> None:
        self._redis = redis
        self._ttl = ttl_seconds

    @property
    def redis(self) -> Redis:
        return self._redis if self._redis is not None else get_redis()

    @property
    def ttl_seconds(self) -> int:
        return int(conf.get("BATCH_RESULT_TTL_SECONDS") if self._ttl is None else self._ttl)

    def get_many(self, addresses: Sequence[ResultAddress]) -> dict[ResultAddress, str]:
        """The stored answers among ``addresses`` (atoms not answered yet are absent)."""
        if not addresses:
            return {}
        raw = self.redis.mget([a.key for a in addresses])
        found: dict[ResultAddress, str] = {}
        for address, value in zip(addresses, raw, strict=True):
            if value is None:
                continue
            try:
                found[address] = json.loads(value)["answer"]
            except (ValueError, KeyError, TypeError):
                logger.warning("corrupt batch result for atom %s; it will be answered again", address.atom_id)
        return found

    def put(self, address: ResultAddress, answer: str, *, batch_id: str | None = None) -> None:
        payload = {"atom_id": str(address.atom_id), "answer": answer, "batch_id": batch_id, "stored_at": time.time()}
        self.redis.set(address.key, keys.canonical_json(payload), ex=self.ttl_seconds)

    def claim(self, address: ResultAddress, token: str, ttl_seconds: float) -> bool:
        return bool(self.redis.set(address.claim_key, token, nx=True, px=max(1, int(ttl_seconds * 1000))))

    def claim_remaining_seconds(self, address: ResultAddress) -> float:
        pttl = self.redis.pttl(address.claim_key)
        return max(0.0, pttl / 1000.0) if pttl and pttl > 0 else 0.0

    def release(self, address: ResultAddress, token: str) -> None:
        self.redis.eval(_RELEASE_SCRIPT, 1, address.claim_key, token)


@dataclass(frozen=True)
class WaveRecord:
    wave_id: UUID
    masterplan_id: str | None
    addresses: list[ResultAddress]


class WaveStore:
    """A wave's record in Redis (``keys.batch_wave``), so its answers are read by wave id.

    A reader names the wave, not atom ids: it gets the answers of the very requests that
    wave sent, whatever else was sent under the same atom ids.
    """

    def __init__(self, redis: Any = None, *, ttl_seconds: int | None = None) -> None:
        self._results = BatchResultStore(redis, ttl_seconds=ttl_seconds)

    def create(self, masterplan_id: str | None, addresses: Sequence[ResultAddress]) -> WaveRecord:
        record = WaveRecord(uuid4(), masterplan_id, list(addresses))
        payload = {"masterplan_id": masterplan_id, "atoms": [[str(a.atom_id), a.digest] for a in addresses]}
        ttl = self._results.ttl_seconds
        self._results.redis.set(keys.batch_wave(record.wave_id), keys.canonical_json(payload), ex=ttl)
        return record

    def get(self, wave_id: UUID) -> WaveRecord | None:
        raw = self._results.redis.get(keys.batch_wave(wave_id))
        if raw is None:
            return None
        data = json.loads(raw)
        mp = data["masterplan_id"]
        return WaveRecord(wave_id, mp, [ResultAddress(UUID(a), mp, d) for a, d in data["atoms"]])

    def answers(self, record: WaveRecord) -> dict[ResultAddress, str]:
        return self._results.get_many(record.addresses)


@dataclass
class WaveReport:
    """What one run did. ``in_progress`` atoms are claimed by another run; retry later for them."""

    batch_id: str
    atom_count: int = 0  # atoms asked for (duplicates included)
    answered: list[UUID] = field(default_factory=list)
    skipped: list[UUID] = field(default_factory=list)
    in_progress: list[UUID] = field(default_factory=list)
    in_progress_addresses: list[ResultAddress] = field(default_factory=list)
    failed: dict[UUID, BaseException] = field(default_factory=dict)
    upstream_calls: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "answered": [str(a) for a in self.answered],
            "skipped": [str(a) for a in self.skipped],
            "in_progress": [str(a) for a in self.in_progress],
            "failed": {str(a): f"{type(e).__name__}: {e}" for a, e in self.failed.items()},
            "upstream_calls": self.upstream_calls,
        }

    def failure(self) -> BaseException | None:
        """The error a task ends with, or None: the first permanent error (not worth a retry;
        the other answers are stored), else a BatchIncompleteError over the transient ones."""
        if not self.failed:
            return None
        permanent = [exc for exc in self.failed.values() if not is_transient(exc)]
        if permanent:
            return permanent[0]
        transient = list(self.failed.values())
        error = BatchIncompleteError(
            f"{len(transient)} of {self.atom_count} atoms failed transiently ({transient[0]!r}); retrying"
        )
        error.__cause__ = transient[0]
        return error


class BatchIncompleteError(TransientLLMError):
    """Some atoms failed transiently; the answered ones are stored, a retry does the rest."""


class WaveBatchRunner:
    """Answers atoms through a :class:`RequestBatcher`, storing each answer as it arrives."""

    def __init__(
        self,
        llm_call: LLMCall,
        *,
        store: BatchResultStore | None = None,
        policies: Any = None,
        claim_seconds: float = 300.0,
        counters: Any = None,
    ) -> None:
        self._llm_call = llm_call
        self.store = store or BatchResultStore()
        self._policies = policies
        self._claim_seconds = claim_seconds
        self._counters = counters

    async def run(
        self,
        atoms: Sequence[tuple[UUID, str]],
        *,
        batch_id: str,
        masterplan_id: Any = None,
        model: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> WaveReport:
        """Answer ``(atom_id, prompt)`` pairs of one masterplan; each answer lands at its :class:`ResultAddress`."""
        report = WaveReport(batch_id=batch_id, atom_count=len(atoms))
        prompts: dict[ResultAddress, str] = {}
        for atom_id, prompt in atoms:
            address = ResultAddress.for_request(
                atom_id, prompt, masterplan_id=masterplan_id, model=model, params=params
            )
            prompts.setdefault(address, prompt)
        stored = self.store.get_many(list(prompts))
        report.skipped = [a.atom_id for a in prompts if a in stored]
        token = secrets.token_hex(16)
        todo: list[ResultAddress] = []
        for address in prompts:
            if address in stored:
                continue
            if self.store.claim(address, token, self._claim_seconds):
                todo.append(address)
            else:
                report.in_progress.append(address.atom_id)
                report.in_progress_addresses.append(address)
        if not todo:
            return report

        async def counted_call(prompt: str) -> str:
            report.upstream_calls += 1
            return await self._llm_call(prompt)

        # Every prompt is known up front: no window to wait for, only the size limit.
        batcher = RequestBatcher(counted_call, batch_window_ms=0, policies=self._policies)

        async def answer(address: ResultAddress) -> None:
            try:
                text = await batcher.execute_with_batching(address.atom_id, prompts[address])
                self.store.put(address, text, batch_id=batch_id)  # at once: a crash later loses nothing
                report.answered.append(address.atom_id)
            except Exception as exc:
                report.failed[address.atom_id] = exc
            finally:
                try:
                    self.store.release(address, token)
                except Exception:  # the claim expires on its own
                    logger.warning("could not release the claim on atom %s", address.atom_id, exc_info=True)

        try:
            await asyncio.gather(*(answer(a) for a in todo))
        finally:
            await batcher.aclose()
            counters = self._counters or get_counters()
            counters.incr("batch", "upstream_calls", report.upstream_calls)
            counters.incr("batch", "atoms_answered", len(report.answered))
            counters.incr("batch", "atoms_skipped", len(report.skipped))
        return report

    def retry_countdown(self, report: WaveReport, *, limit: float) -> float:
        """Seconds until the claims of the atoms another run holds run out (at least 1, at most ``limit``)."""
        wait = max(self.store.claim_remaining_seconds(a) for a in report.in_progress_addresses)
        return min(max(1.0, wait), limit)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


def run_coroutine_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even if this thread already has a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())  # type: ignore[arg-type]
    # Eager Celery called from async code: use a private thread with its own loop.
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(factory())  # type: ignore[arg-type]
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, name="mgecache-wave-batch")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]
