"""Durable statistics counters shared by every process, kept in Redis hashes.

Prometheus counters are per process; ``hit_rate()`` and the statistics endpoint need
the truth across many gunicorn and Celery processes. Increments are buffered in memory
and flushed with one pipelined HINCRBYFLOAT round trip at most every
``COUNTER_FLUSH_SECONDS`` (and at exit, and before every read), so counting adds no
round trip to a cache hit. The process-wide counters also flush from a background
thread one interval after they were last dirty, so an idle process publishes its last
counts: another process's statistics are at most ``COUNTER_FLUSH_SECONDS`` behind.
Flushing fails open: a Redis outage loses no more than the buffered deltas, which are
kept and retried on the next flush.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from redis import Redis

from cache_app.core import conf, keys
from cache_app.core.redis_client import RedisGuard, get_breaker, get_redis
from cache_app.core.state import process_wide

logger = logging.getLogger(__name__)
_instances: weakref.WeakSet[DurableCounters] = weakref.WeakSet()


class DurableCounters:
    """Buffered HINCRBYFLOAT counters. ``incr`` is the hot path: a dict update under a lock.

    Deltas are keyed by (key prefix, layer, masterplan) and turned into Redis keys at
    flush time, so counting builds no key and parses no UUID.
    """

    def __init__(
        self,
        redis: Redis | None = None,
        *,
        guard: RedisGuard | None = None,
        flush_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        background: bool = False,
    ) -> None:
        self._redis = redis
        self._background = background  # flush from a thread when dirty (the process-wide counters)
        self._flusher: threading.Thread | None = None
        self._wall_clock = wall_clock  # stamps each masterplan's last activity (P stats:activity)
        self._guard = guard or RedisGuard(get_breaker(), layer="stats")
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # Held while deltas taken from _pending are on their way to Redis (see flush).
        self._flushing = threading.Lock()
        self._pending: dict[tuple[str, str, Any], dict[str, float]] = {}
        self._next_flush = clock() + self._interval()
        _instances.add(self)

    def _interval(self) -> float:
        return float(conf.get("COUNTER_FLUSH_SECONDS") if self._flush_seconds is None else self._flush_seconds)

    @property
    def redis(self) -> Redis:
        return self._redis if self._redis is not None else get_redis()

    def incr(self, layer: str, field: str, amount: float = 1, *, masterplan_id: Any = None) -> None:
        """Add ``amount`` to ``field`` of the layer's totals (and of the masterplan's, if given)."""
        base = keys.prefix()
        flusher = None
        with self._lock:
            fields = self._pending.setdefault((base, layer, None), {})
            fields[field] = fields.get(field, 0.0) + amount
            if masterplan_id is not None:
                fields = self._pending.setdefault((base, layer, masterplan_id), {})
                fields[field] = fields.get(field, 0.0) + amount
            if self._background and self._flusher is None:
                # Decided under the lock the flusher ends under: a count never waits for no one.
                flusher = self._flusher = threading.Thread(
                    target=_flush_while_dirty, args=(weakref.ref(self),), name="mgecache-counters", daemon=True
                )
        if flusher is not None:
            flusher.start()
        if self._clock() >= self._next_flush:
            self.flush(wait=False)  # a request thread never queues behind another thread's flush

    def _background_step(self) -> bool:
        """The flusher thread's turn: flush; True (the thread ends) if nothing is left to write."""
        self.flush()
        with self._lock:
            if self._pending:
                return False
            self._flusher = None
            return True

    def _take(self) -> dict[tuple[str, str, Any], dict[str, float]]:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._next_flush = self._clock() + self._interval()
        return pending

    def _give_back(self, pending: dict[tuple[str, str, Any], dict[str, float]]) -> None:
        with self._lock:
            for scope, fields in pending.items():
                mine = self._pending.setdefault(scope, {})
                for field, amount in fields.items():
                    mine[field] = mine.get(field, 0.0) + amount

    def flush(self, *, wait: bool = True) -> bool:
        """Write buffered deltas to Redis. Returns False (and keeps them) if Redis failed.

        When it returns True, every delta counted before the call is in Redis, including those
        another thread (the background flusher) had already taken and was still writing: that
        flush is waited for. Callers rely on it: a wave's atom is marked final after a flush, and
        its caller may read statistics from another process at once. ``wait=False``: return at
        once if another thread is flushing (its write, or the next, carries these deltas).
        """
        if not self._flushing.acquire(blocking=wait):
            return True
        try:
            pending = self._take()
            if not pending:
                return True
            writes = _by_key(pending)
            active = _activity(pending, self._wall_clock())
            if not writes or self._guard.run("stats_flush", lambda: self._write(writes, active), False):
                return True
            self._give_back(pending)  # for the next attempt
            return False
        finally:
            self._flushing.release()

    def _write(self, writes: dict[str, dict[str, float]], active: dict[str, float]) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        for key, fields in writes.items():
            for field, amount in fields.items():
                if amount:
                    pipe.hincrbyfloat(key, field, amount)
        if active:  # in the same round trip as the counts
            stamps: dict[Any, Any] = dict(active)
            pipe.hset(keys.activity(), mapping=stamps)
        pipe.execute()
        return True

    def read(self, layer: str, *, masterplan_id: Any = None) -> dict[str, float]:
        """Totals for a layer (or one masterplan), including this process's unflushed deltas."""
        self.flush()
        key = keys.stats(layer, masterplan_id)
        raw: dict[Any, Any] = self._guard.run("stats_read", lambda: self.redis.hgetall(key), {}) or {}
        totals = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
        wanted = keys.normalize_masterplan_id(masterplan_id)
        base = keys.prefix()
        with self._lock:  # deltas that could not be flushed still count locally
            for (scope_base, scope_layer, scope_mp), fields in self._pending.items():
                if scope_base != base or scope_layer != layer:
                    continue
                try:
                    if keys.normalize_masterplan_id(scope_mp) != wanted:
                        continue
                except ValueError:
                    continue
                for field, amount in fields.items():
                    totals[field] = totals.get(field, 0.0) + amount
        return totals

    def hit_rate(self, layer: str, *, hit_fields: tuple[str, ...] = ("hits",)) -> float:
        totals = self.read(layer)
        hits = sum(totals.get(f, 0.0) for f in hit_fields)
        lookups = hits + totals.get("misses", 0.0)
        return hits / lookups if lookups else 0.0


def _by_key(pending: dict[tuple[str, str, Any], dict[str, float]]) -> dict[str, dict[str, float]]:
    """Buffered deltas summed per Redis key, under the key prefix configured now."""
    current = keys.prefix()
    writes: dict[str, dict[str, float]] = {}
    for (base, layer, masterplan_id), fields in pending.items():
        if base != current:  # counted under a prefix no longer configured (tests only)
            continue
        try:
            key = keys.stats(layer, masterplan_id)
        except ValueError:
            logger.warning("dropping counters of an invalid masterplan id %r", masterplan_id)
            continue
        bucket = writes.setdefault(key, {})
        for field, amount in fields.items():
            bucket[field] = bucket.get(field, 0.0) + amount
    return writes


def _activity(pending: dict[tuple[str, str, Any], dict[str, float]], stamp: float) -> dict[str, float]:
    """The masterplans the buffered deltas touched -> ``stamp`` (their last-activity time)."""
    active: dict[str, float] = {}
    for _base, _layer, masterplan_id in pending:
        if masterplan_id is None:
            continue
        try:
            active[keys.scope(masterplan_id)] = stamp
        except ValueError:
            continue
    return active


def histogram_field(value: float, bounds: tuple[float, ...]) -> str:
    """The counter field of ``value``'s bucket: ``le:<smallest bound >= value>``, else ``le:+Inf``.

    Durable histograms (e.g. the RAG similarity scores) count one field per bucket, so a
    bucket is a bounded, fixed set of field names.
    """
    for bound in bounds:
        if value <= bound:
            return f"le:{bound:g}"
    return "le:+Inf"


def _flush_while_dirty(ref: weakref.ReferenceType[DurableCounters]) -> None:
    """Every interval, flush until the buffer stays empty (or the counters are dropped)."""
    while True:
        counters = ref()
        if counters is None:
            return
        wait = counters._interval()
        del counters  # not held while waiting
        time.sleep(wait)
        counters = ref()
        if counters is None or counters._background_step():
            return
        del counters


def _after_fork_in_child() -> None:
    # Threads do not survive fork, and a lock held by one of them in the parent stays held.
    for counters in list(_instances):
        counters._lock = threading.Lock()
        counters._flushing = threading.Lock()
        counters._flusher = None


os.register_at_fork(after_in_child=_after_fork_in_child)


@process_wide
def get_counters() -> DurableCounters:
    """The process-wide counters (one buffer, flushed together; idle processes flush in the background)."""
    return DurableCounters(background=True)


@atexit.register
def _flush_all() -> None:
    for counters in list(_instances):
        try:
            counters.flush()
        except Exception:  # interpreter shutdown: best effort
            pass
