"""A wave's state in Redis (one hash per wave) and the report read from it; rides out failovers."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from batching_app.waves.spec import (
    PENDING,
    STATUSES,
    AtomSpec,
    WaveMeta,
)
from cache_app.core import conf, keys, metrics
from cache_app.core.cluster import FAILOVER_ERRORS, reload_slot_map
from cache_app.core.redis_client import get_redis
from cache_app.core.state import process_wide

logger = logging.getLogger(__name__)
T = TypeVar("T")

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


def wave_report(fields: Mapping[str, str]) -> dict[str, Any]:
    """The API's view of a wave: its counts and every atom's outcome, from the hash ``read`` returned."""
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
