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
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from batching_app.batcher import StaticBatchPolicy
from batching_app.llm import TRANSIENT_ERRORS
from cache_app.core import conf, keys, metrics
from cache_app.core.cluster import FAILOVER_ERRORS, reload_slot_map
from cache_app.core.counters import DurableCounters, get_counters
from cache_app.core.policies import BatchSettings, get_policy_source
from cache_app.core.redis_client import get_redis
from cache_app.core.state import process_wide
from cache_app.core.taskopts import BrokerUnavailableError, send_task
from cache_app.llm.client import LLMClient, LLMResponse, get_llm_client, run_sync

logger = logging.getLogger(__name__)
T = TypeVar("T")

PENDING, HIT, ANSWERED, FAILED = "pending", "hit", "answered", "failed"
STATUSES = (PENDING, HIT, ANSWERED, FAILED)
OVERRIDE_FIELDS = ("model", "temperature", "max_tokens", "system")
DEADLINE_EXCEEDED = "deadline exceeded"

# Input bounds (the API's serializers state the same limits); prompts and systems are bounded by
# the MGECACHE settings MAX_PROMPT_CHARS and MAX_SYSTEM_CHARS. MAX_TOKENS is the largest maximum
# output a ModelPricing row may declare.
MAX_MODEL_CHARS = 100
MAX_TOKENS = 1_000_000
MAX_ERROR_CHARS = 500
MAX_DEADLINE_SECONDS = 3600.0
LOOKUP_CONCURRENCY = 8
# After the deadline, how long a batch task may still wait for calls in flight to end.
CLOSE_MARGIN_SECONDS = 30.0

# Moves atoms from pending to a final status; never overwrites a final one, never revives an
# expired wave. ARGV: triplets (index, status, result JSON). Returns how many moved.
_MARK_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local moved = 0
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], 's:' .. ARGV[i]) == 'pending' then
    redis.call('HSET', KEYS[1], 's:' .. ARGV[i], ARGV[i + 1], 'r:' .. ARGV[i], ARGV[i + 2])
    moved = moved + 1
  end
end
if moved > 0 then redis.call('HINCRBY', KEYS[1], 'done', moved) end
return moved
"""

# Counts a batch task's attempts (only on a wave that still exists: no key without a TTL).
_ATTEMPT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
"""

RETRY_FIRST_PAUSE = 0.05
RETRY_MAX_PAUSE = 0.5


class WaveValidationError(ValueError):
    """Bad wave input. ``errors`` maps a field path (``atoms.3.prompt``) to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items()))


@dataclass(frozen=True)
class GenerationParams:
    model: str
    temperature: float
    max_tokens: int | None = None
    system: str | None = None


@dataclass(frozen=True)
class AtomSpec:
    index: int  # position in the wave's input
    atom_id: uuid.UUID
    prompt: str
    params: GenerationParams

    def identity(self) -> tuple:
        """Atoms with the same identity have the same cache entry (the wave has one masterplan)."""
        return (self.prompt, self.params)

    def to_json(self) -> str:
        return keys.canonical_json({"atom_id": str(self.atom_id), "prompt": self.prompt, **asdict(self.params)})

    @classmethod
    def from_json(cls, index: int, raw: str | bytes) -> AtomSpec:
        data = json.loads(raw)
        return cls(index, uuid.UUID(data.pop("atom_id")), data.pop("prompt"), GenerationParams(**data))


@dataclass(frozen=True)
class WaveMeta:
    wave_id: str
    masterplan_id: str
    created_at: float  # epoch seconds (wall clock: shared by every process)
    deadline: float
    size: int

    def to_json(self) -> str:
        return keys.canonical_json(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> WaveMeta:
        return cls(**json.loads(raw))


# --- input -------------------------------------------------------------------------------------


def _check_params(raw: Mapping[str, Any], where: str, errors: dict[str, list[str]]) -> None:
    unknown = sorted(set(raw) - set(OVERRIDE_FIELDS))
    if unknown:
        errors.setdefault(where, []).append(f"unknown fields: {', '.join(unknown)}")
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS):
        errors.setdefault(f"{where}.model", []).append(f"a non-blank string of at most {MAX_MODEL_CHARS} characters")
    temperature = raw.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or not 0 <= temperature <= 2
    ):
        errors.setdefault(f"{where}.temperature", []).append("a number between 0 and 2")
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS
    ):
        errors.setdefault(f"{where}.max_tokens", []).append(f"an integer between 1 and {MAX_TOKENS}")
    system, limit = raw.get("system"), int(conf.get("MAX_SYSTEM_CHARS"))
    if system is not None and (not isinstance(system, str) or len(system) > limit):
        errors.setdefault(f"{where}.system", []).append(f"a string of at most {limit} characters")


def _check_atom(i: int, atom: Any, errors: dict[str, list[str]]) -> None:
    """One atom's input. Atom ids label the atoms; the report keeps the input order, so they may repeat."""
    where = f"atoms.{i}"
    if not isinstance(atom, Mapping):
        errors.setdefault(where, []).append("an object with atom_id and prompt")
        return
    unknown = sorted(set(atom) - {"atom_id", "prompt", "overrides"})
    if unknown:
        errors.setdefault(where, []).append(f"unknown fields: {', '.join(unknown)}")
    try:
        uuid.UUID(str(atom.get("atom_id")))
    except ValueError:
        errors.setdefault(f"{where}.atom_id", []).append("a UUID")
    prompt, limit = atom.get("prompt"), int(conf.get("MAX_PROMPT_CHARS"))
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > limit:
        errors.setdefault(f"{where}.prompt", []).append(f"a non-blank string of at most {limit} characters")
    overrides = atom.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        errors.setdefault(f"{where}.overrides", []).append("an object")
    else:
        _check_params(overrides, f"{where}.overrides", errors)


def build_atoms(defaults: Mapping[str, Any] | None, atoms: Sequence[Any]) -> list[AtomSpec]:
    """Validate a wave's input and resolve each atom's parameters (defaults, then its overrides)."""
    errors: dict[str, list[str]] = {}
    defaults = defaults or {}
    if not isinstance(defaults, Mapping):
        raise WaveValidationError({"defaults": ["an object"]})
    _check_params(defaults, "defaults", errors)
    limit = int(conf.get("MAX_WAVE_ATOMS"))
    if isinstance(atoms, (str, bytes)) or not isinstance(atoms, Sequence) or not 1 <= len(atoms) <= limit:
        raise WaveValidationError({**errors, "atoms": [f"a list of 1 to {limit} atoms"]})
    for i, atom in enumerate(atoms):
        _check_atom(i, atom, errors)
    if errors:
        raise WaveValidationError(errors)
    temperature = defaults.get("temperature")
    base = {
        "model": defaults.get("model") or conf.get("LLM_DEFAULT_MODEL"),
        "temperature": 0.7 if temperature is None else temperature,
        "max_tokens": defaults.get("max_tokens"),
        "system": defaults.get("system"),
    }
    specs = []
    for i, atom in enumerate(atoms):
        merged = {**base, **{k: v for k, v in (atom.get("overrides") or {}).items() if v is not None}}
        merged["temperature"] = float(merged["temperature"])
        specs.append(AtomSpec(i, uuid.UUID(str(atom["atom_id"])), atom["prompt"], GenerationParams(**merged)))
    return specs


def plan_batches(misses: Sequence[AtomSpec], max_batch_size: int) -> list[list[int]]:
    """Batches of atom indexes: one parameter set each, at most ``max_batch_size`` distinct prompts.

    Atoms with identical prompts go to the same batch, where single-flight answers them with
    one call. Order follows the input.
    """
    size = max(1, int(max_batch_size))
    groups: dict[GenerationParams, dict[str, list[int]]] = {}
    for atom in misses:
        groups.setdefault(atom.params, {}).setdefault(atom.prompt, []).append(atom.index)
    batches: list[list[int]] = []
    for by_prompt in groups.values():
        distinct = list(by_prompt.values())
        for start in range(0, len(distinct), size):
            batches.append([index for same in distinct[start : start + size] for index in same])
    return batches


# --- outcomes ----------------------------------------------------------------------------------


def success_result(response: LLMResponse) -> tuple[str, str]:
    """(status, result JSON) of an answered atom."""
    status = HIT if response.cached and response.cache_layer == "llm" else ANSWERED
    data = response.as_dict()
    data.pop("latency_s", None)
    return status, keys.canonical_json(data)


def failure_result(error: BaseException | str) -> tuple[str, str]:
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return FAILED, keys.canonical_json({"error": message[:MAX_ERROR_CHARS]})


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


# --- Redis state -------------------------------------------------------------------------------


def _script(source: str, key: str, *args: Any) -> Callable[[Any], Any]:
    """A WaveStore operation: the Lua script ``source`` on ``key`` (EVAL: a promoted replica has no script cache)."""
    return lambda client: client.eval(source, 1, key, *args)


class StoreOutage:
    """When this process's wave state started failing: one clock for every WaveStore call.

    A call's retry budget runs from the outage's start, not from the call's own: through a
    failover's gap every call still waits for the promotion, but once Redis has been down for a
    whole budget, later calls fail after one attempt instead of each holding a web thread for
    the budget again. A failure more than a budget after the previous one starts a new outage,
    so a forgotten one cannot cut a later blip short; any success ends it.
    """

    def __init__(self) -> None:
        self.since: float | None = None
        self.last = 0.0

    def started(self, now: float, budget: float) -> float:
        """The start of the outage that a failure at ``now`` belongs to."""
        if self.since is None or now - self.last > budget:
            self.since = now
        self.last = now
        return self.since

    def ended(self) -> None:
        self.since = None


@process_wide
def get_store_outage() -> StoreOutage:
    return StoreOutage()


class WaveStore:
    """One hash per wave: ``meta``, ``n``, ``done``, and per atom ``a:<i>`` (spec), ``s:<i>`` (status),
    ``r:<i>`` (result); per batch ``b:<n>`` (atom indexes) and ``t:<n>`` (attempts).

    Waves cannot fail open like the caches, so every operation rides out a failover's gap:
    :meth:`_call` retries transient Redis errors with capped exponential backoff until
    ``WAVE_STORE_RETRY_SECONDS`` after the outage began (:class:`StoreOutage`), then raises the
    last one (the API answers 503). Each attempt takes the client afresh: the Sentinel pool asks
    the sentinels for the master on its next connection, and a Cluster client's slot map is
    reloaded before each retry. A retry
    is safe because every operation may land twice: ``create`` and ``set_batches`` write the
    same fields again; ``mark`` only moves pending atoms, so a repeat moves nothing (if the
    first reply was lost, ``WAVE_ATOMS`` undercounts those atoms: acceptable, the wave state
    is right); ``attempt`` may count one run twice, which only makes the batch task look its
    atoms up in the cache first (``lookup=attempt > 1``), harmless; the rest only read.
    """

    def __init__(
        self,
        redis: Any = None,
        *,
        ttl_seconds: int | None = None,
        retry_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
        outage: StoreOutage | None = None,
    ) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._retry = retry_seconds
        self._clock = clock
        self._sleep = sleep
        self._outage = outage

    @property
    def redis(self) -> Any:
        return self._redis if self._redis is not None else get_redis()

    @property
    def ttl_seconds(self) -> int:
        return int(conf.get("WAVE_TTL_SECONDS") if self._ttl is None else self._ttl)

    @property
    def retry_seconds(self) -> float:
        return float(conf.get("WAVE_STORE_RETRY_SECONDS") if self._retry is None else self._retry)

    @property
    def outage(self) -> StoreOutage:
        return self._outage if self._outage is not None else get_store_outage()

    def _call(self, operation: Callable[[Any], T]) -> T:
        """``operation(client)``, retried on transient Redis errors until the outage's budget is spent."""
        budget, outage = self.retry_seconds, self.outage
        pause, give_up = RETRY_FIRST_PAUSE, None
        while True:
            client = self.redis
            try:
                result = operation(client)
            except FAILOVER_ERRORS as exc:
                now = self._clock()
                began = outage.started(now, budget)  # every failure keeps the outage current
                if give_up is None:  # fixed at the first failure: a success elsewhere must not extend it
                    give_up = began + budget
                left = give_up - now
                if left <= 0:
                    raise
                if pause == RETRY_FIRST_PAUSE:
                    logger.info("wave state: Redis failed (%s: %s); retrying for %.2f s", type(exc).__name__, exc, left)
                self._sleep(min(pause, left))
                pause = min(pause * 2, RETRY_MAX_PAUSE)
                reload_slot_map(client)
            else:
                outage.ended()
                return result

    def create(self, meta: WaveMeta, atoms: Sequence[AtomSpec]) -> None:
        mapping: dict[str, Any] = {"meta": meta.to_json(), "n": len(atoms), "done": 0, "batches": 0}
        for atom in atoms:
            mapping[f"a:{atom.index}"] = atom.to_json()
            mapping[f"s:{atom.index}"] = PENDING
        key, ttl = keys.wave(meta.wave_id), self.ttl_seconds

        def write(client: Any) -> Any:
            pipe = client.pipeline(transaction=True)
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, ttl)
            return pipe.execute()

        self._call(write)

    def set_batches(self, wave_id: str, batches: Sequence[Sequence[int]]) -> None:
        mapping: dict[str, Any] = {"batches": len(batches)}
        for number, indexes in enumerate(batches):
            mapping[f"b:{number}"] = json.dumps(list(indexes))
        key = keys.wave(wave_id)
        self._call(lambda client: client.hset(key, mapping=mapping))

    def mark(self, wave_id: str, outcomes: Sequence[tuple[int, str, str]]) -> int:
        """Record final outcomes ``(index, status, result JSON)``; returns how many atoms were still pending."""
        by_status: dict[str, list[Any]] = {}
        for index, status, result in outcomes:
            by_status.setdefault(status, []).extend((int(index), status, result))
        key, moved = keys.wave(wave_id), 0
        for status, argv in by_status.items():  # one round trip per status (callers send one)
            count = int(self._call(_script(_MARK_SCRIPT, key, *argv)))
            metrics.WAVE_ATOMS.labels(status).inc(count)
            moved += count
        return moved

    def attempt(self, wave_id: str, batch_no: int) -> int:
        """This run's attempt number for a batch (1 first); 0 if the wave is gone."""
        return int(self._call(_script(_ATTEMPT_SCRIPT, keys.wave(wave_id), f"t:{int(batch_no)}")))

    def progress(self, wave_id: str) -> tuple[int, int, WaveMeta] | None:
        """(final atoms, atoms, meta), or None if the wave is unknown or expired."""
        key = keys.wave(wave_id)
        meta, size, done = self._call(lambda client: client.hmget(key, ["meta", "n", "done"]))
        if meta is None:
            return None
        return int(done or 0), int(size or 0), WaveMeta.from_json(meta)

    def load_batch(self, wave_id: str, batch_no: int) -> tuple[WaveMeta, list[AtomSpec], dict[int, str]] | None:
        """A batch's meta, atoms and their current statuses; None if the wave or batch is unknown."""
        key = keys.wave(wave_id)
        meta, raw_indexes = self._call(lambda client: client.hmget(key, ["meta", f"b:{int(batch_no)}"]))
        if meta is None or raw_indexes is None:
            return None
        indexes = [int(i) for i in json.loads(raw_indexes)]
        fields = [f"a:{i}" for i in indexes] + [f"s:{i}" for i in indexes]
        values = self._call(lambda client: client.hmget(key, fields)) if indexes else []
        specs = [AtomSpec.from_json(i, raw) for i, raw in zip(indexes, values[: len(indexes)], strict=True)]
        statuses = {i: _text(s) for i, s in zip(indexes, values[len(indexes) :], strict=True)}
        return WaveMeta.from_json(meta), specs, statuses

    def read(self, wave_id: str) -> dict[str, str] | None:
        key = keys.wave(wave_id)
        raw = self._call(lambda client: client.hgetall(key))
        if not raw:
            return None
        return {_text(k): _text(v) for k, v in raw.items()}


def _report(fields: Mapping[str, str]) -> dict[str, Any]:
    meta = WaveMeta.from_json(fields["meta"])
    counts = dict.fromkeys(STATUSES, 0)
    atoms = []
    for index in range(meta.size):
        spec = json.loads(fields[f"a:{index}"])
        status = fields.get(f"s:{index}", PENDING)
        counts[status] = counts.get(status, 0) + 1
        result = json.loads(fields[f"r:{index}"]) if f"r:{index}" in fields else {}
        atoms.append(
            {
                "atom_id": spec["atom_id"],
                "status": status,
                "error": result.get("error"),
                "text": result.get("text"),
                "model": result.get("model", spec["model"]),
                "cached": result.get("cached", False),
                "cache_layer": result.get("cache_layer"),
                "prompt_tokens": result.get("prompt_tokens"),
                "completion_tokens": result.get("completion_tokens"),
                "cost_usd": result.get("cost_usd", 0.0),
                "saved_usd": result.get("saved_usd", 0.0),
                "finish_reason": result.get("finish_reason"),
                "provider": result.get("provider"),
                "simulated": result.get("simulated"),  # True: the offline simulator answered, not a model
            }
        )
    return {
        "wave_id": meta.wave_id,
        "masterplan_id": meta.masterplan_id,
        "status": "completed" if counts[PENDING] == 0 else "running",
        "created_at": _iso(meta.created_at),
        "deadline": _iso(meta.deadline),
        "counts": {"total": meta.size, **counts},
        "batches": int(fields.get("batches", 0)),
        "atoms": atoms,
    }


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
        return _report(fields)

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
