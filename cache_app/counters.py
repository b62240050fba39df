"""Durable statistics counters shared by every process, kept in Redis hashes.

Prometheus counters are per process; ``hit_rate()`` and the statistics endpoint need
the truth across many gunicorn and Celery processes. Increments are buffered in memory
and flushed with one pipelined HINCRBYFLOAT round trip at most every
``COUNTER_FLUSH_SECONDS`` (and at exit, and before every read), so counting adds no
round trip to a cache hit. Flushing fails open: a Redis outage loses no more than
the buffered deltas, which are kept and retried on the next flush.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from . import conf, keys
from .redis_client import RedisGuard, get_breaker, get_redis

_instances: weakref.WeakSet[DurableCounters] = weakref.WeakSet()


class DurableCounters:
    def __init__(
        self,
        redis: Any = None,
        *,
        guard: RedisGuard | None = None,
        flush_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis
        self._guard = guard or RedisGuard(get_breaker(), layer="stats")
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._last_flush = clock()
        _instances.add(self)

    @property
    def redis(self) -> Any:
        return self._redis if self._redis is not None else get_redis()

    def incr(self, layer: str, field: str, amount: float = 1, *, masterplan_id: Any = None) -> None:
        """Add ``amount`` to ``field`` of the layer's totals (and of the masterplan's, if given)."""
        with self._lock:
            self._pending[keys.stats(layer)][field] += amount
            if masterplan_id is not None:
                self._pending[keys.stats(layer, masterplan_id)][field] += amount
        interval = float(conf.get("COUNTER_FLUSH_SECONDS") if self._flush_seconds is None else self._flush_seconds)
        if self._clock() - self._last_flush >= interval:
            self.flush()

    def flush(self) -> bool:
        """Write buffered deltas to Redis. Returns False (and keeps them) if Redis failed."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(lambda: defaultdict(float))
            self._last_flush = self._clock()
        if not pending:
            return True

        def write() -> bool:
            pipe = self.redis.pipeline(transaction=False)
            for key, fields in pending.items():
                for field, amount in fields.items():
                    if amount:
                        pipe.hincrbyfloat(key, field, amount)
            pipe.execute()
            return True

        if self._guard.run("stats_flush", write, False):
            return True
        with self._lock:  # put the deltas back for the next attempt
            for key, fields in pending.items():
                for field, amount in fields.items():
                    self._pending[key][field] += amount
        return False

    def read(self, layer: str, *, masterplan_id: Any = None) -> dict[str, float]:
        """Totals for a layer (or one masterplan), including this process's unflushed deltas."""
        self.flush()
        key = keys.stats(layer, masterplan_id)
        raw = self._guard.run("stats_read", lambda: self.redis.hgetall(key), {}) or {}
        totals = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
        with self._lock:  # deltas that could not be flushed still count locally
            for field, amount in self._pending.get(key, {}).items():
                totals[field] = totals.get(field, 0.0) + amount
        return totals

    def hit_rate(self, layer: str, *, hit_fields: tuple[str, ...] = ("hits",)) -> float:
        totals = self.read(layer)
        hits = sum(totals.get(f, 0.0) for f in hit_fields)
        lookups = hits + totals.get("misses", 0.0)
        return hits / lookups if lookups else 0.0


_default: DurableCounters | None = None


def get_counters() -> DurableCounters:
    global _default
    if _default is None:
        _default = DurableCounters()
    return _default


@atexit.register
def _flush_all() -> None:
    for counters in list(_instances):
        try:
            counters.flush()
        except Exception:  # interpreter shutdown: best effort
            pass
