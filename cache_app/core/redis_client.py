"""Redis clients for the cache layers, and the circuit breaker that makes them fail open.

* :func:`get_redis` is django-redis's ``default`` connection (real Redis, Sentinel, or
  the embedded fakeredis when ``REDIS_URL`` is unset), or, with
  ``MGECACHE['REDIS_CLUSTER_NODES']``, a Redis Cluster client for the cache layers
  (Django's own cache, throttles and the Celery broker stay on ``REDIS_URL``).
* :func:`get_async_redis` is a ``redis.asyncio`` client on the same server, one per
  event loop (asyncio connections cannot cross loops); on a Cluster, the sync cluster
  client run in worker threads (cache_app.core.cluster.ThreadedCluster: why, there).
* :class:`CircuitBreaker` bounds the cost of an outage: the first failure costs at most
  the socket timeout; while the breaker is open calls skip Redis in microseconds, and a
  background thread (never a caller) probes Redis and closes the breaker once it answers,
  whether or not any call comes meanwhile. A timeout opens it only once a ping of its own
  has failed too (why: :meth:`CircuitBreaker.record_failure`).
* :class:`RedisGuard` runs one cache operation under the breaker, counts and rate-limits
  the logging of failures, and returns a default instead of raising.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio
from django.conf import settings

from cache_app.core import conf, metrics
from cache_app.core.cluster import (
    CacheCluster,
    ClusterClientError,
    ThreadedCluster,
    make_cluster,
    parse_nodes,
)
from cache_app.core.lograte import LogInterval
from cache_app.core.state import process_wide

logger = logging.getLogger(__name__)
T = TypeVar("T")


def get_redis() -> redis.Redis:
    """The synchronous client every cache layer uses by default."""
    if conf.get("REDIS_CLUSTER_NODES"):
        return get_cluster()  # type: ignore[return-value]  # same command surface
    from django_redis import get_redis_connection

    return get_redis_connection("default")


@process_wide
def get_cluster() -> CacheCluster:
    """The process-wide Redis Cluster client (thread-safe: one connection pool per node)."""
    return make_cluster(
        parse_nodes(conf.get("REDIS_CLUSTER_NODES")),
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        connect_timeout=settings.REDIS_SOCKET_CONNECT_TIMEOUT,
    )


_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = weakref.WeakKeyDictionary()


def get_async_redis() -> redis.asyncio.Redis:
    """A ``redis.asyncio`` client for the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _make_async_client()
        _async_clients[loop] = client
    return client


def _make_async_client() -> redis.asyncio.Redis:
    if conf.get("REDIS_CLUSTER_NODES"):
        return ThreadedCluster(get_cluster())  # type: ignore[return-value]  # the layers' subset of the API
    if getattr(settings, "REDIS_EMBEDDED", False):
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=settings.EMBEDDED_REDIS_SERVER)
    if getattr(settings, "REDIS_SENTINELS", None):
        from urllib.parse import urlsplit

        from redis.asyncio.sentinel import Sentinel

        parts = urlsplit(settings.REDIS_URL)  # redis://<master name>/<db>
        path = parts.path.strip("/")
        sentinel = Sentinel(
            settings.REDIS_SENTINEL_ADDRESSES,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=settings.REDIS_SOCKET_CONNECT_TIMEOUT,
        )
        return sentinel.master_for(
            parts.hostname,
            db=int(path) if path.isdigit() else 0,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            socket_connect_timeout=settings.REDIS_SOCKET_CONNECT_TIMEOUT,
        )
    return redis.asyncio.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        socket_connect_timeout=settings.REDIS_SOCKET_CONNECT_TIMEOUT,
    )


class CircuitBreaker:
    """Closed -> (failures >= threshold) -> open -> (probe succeeds) -> closed.

    From the moment it opens until it closes, one background thread per breaker calls
    ``probe`` every ``reset_seconds``, with no caller needed: a process that sat idle while
    Redis recovered finds the breaker closed. The thread ends when the breaker closes (or
    is garbage-collected); no caller ever waits on a dead server after the first failure.
    """

    def __init__(
        self,
        *,
        probe: Callable[[], Any] | None = None,
        failure_threshold: int | None = None,
        reset_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "redis",
    ) -> None:
        self.name = name
        self._probe = probe
        self._threshold = failure_threshold
        self._reset = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._outage_since: float | None = None  # first opening of the current outage (not reset by probes)
        self._prober: threading.Thread | None = None  # the background probe while open (it clears this)
        self._verifier: threading.Thread | None = None  # the ping that checks a timeout (it clears this)
        self._closed = threading.Event()
        self._closed.set()
        _breakers.add(self)

    @property
    def failure_threshold(self) -> int:
        return int(conf.get("BREAKER_FAILURE_THRESHOLD") if self._threshold is None else self._threshold)

    @property
    def reset_seconds(self) -> float:
        return float(conf.get("BREAKER_RESET_SECONDS") if self._reset is None else self._reset)

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the breaker is closed (e.g. the background probe succeeded); False on timeout."""
        return self._closed.wait(timeout)

    def allow(self) -> bool:
        """True if a call may go to Redis now. While open, makes sure the background probe runs."""
        if self._opened_at is None:
            return True
        if self._prober is None:  # e.g. in a forked child (see _after_fork_in_child)
            self._start_probe()
        return False

    def record_success(self) -> None:
        if self._failures or self._opened_at is not None:
            with self._lock:
                self._failures = 0
                if self._opened_at is not None:
                    self._opened_at = None
                    self._closed.set()
                    metrics.REDIS_BREAKER_OPEN.labels(self.name).set(0)
                    if self._outage_since is not None:
                        metrics.REDIS_OUTAGE_SECONDS.labels(self.name).observe(self._clock() - self._outage_since)
                        self._outage_since = None
                    logger.warning("Redis is answering again: cache %s resumed", self.name)

    def record_failure(self, exc: BaseException | None = None) -> None:
        """Count a failure; a timeout (``exc``) counts only if a ping from a thread of its own fails too.

        In a process short of CPU, an event loop can run a read's timeout before the read that
        had its answer (asyncio runs due timers before the task the data woke): on a saturated
        web worker that opened the breaker with Redis idle, and turned a second of hits into
        provider calls. The ping's socket timeout is kept by the kernel, so only a Redis that
        does not answer fails it. Refusals and resets count at once.
        """
        if self._probe is not None and isinstance(exc, (TimeoutError, redis.TimeoutError)):
            self._verify_timeout()
            return
        with self._lock:
            self._failures += 1
            opened = self._opened_at is None and self._failures >= self.failure_threshold
            if opened:
                self._opened_at = self._outage_since = self._clock()
                self._closed.clear()
                metrics.REDIS_BREAKER_OPEN.labels(self.name).set(1)
                metrics.REDIS_BREAKER_TRIPS.labels(self.name).inc()
            elif self._opened_at is not None:
                self._opened_at = self._clock()  # a failed probe restarts the wait
        if opened:
            self._start_probe()

    def _verify_timeout(self) -> None:
        with self._lock:
            if self._opened_at is not None or self._verifier is not None:
                return  # already open, or a ping is deciding for this burst of timeouts
            self._verifier = threading.Thread(
                target=self._verify_step, name=f"mgecache-{self.name}-verify", daemon=True
            )
            self._verifier.start()

    def _verify_step(self) -> None:
        answered = self._answers()
        metrics.REDIS_TIMEOUTS_VERIFIED.labels(self.name, "answered" if answered else "failed").inc()
        if not answered:
            self.record_failure()
        with self._lock:
            self._verifier = None

    def wait_verified(self, timeout: float | None = None) -> bool:
        """Block until no timeout is being checked (tests); False if one still is after ``timeout``."""
        verifier = self._verifier
        if verifier is not None:
            verifier.join(timeout)
        return self._verifier is None

    def _start_probe(self) -> None:
        with self._lock:
            if self._opened_at is None or self._prober is not None:
                return
            # The thread holds the breaker only weakly: a dropped breaker ends its probe.
            self._prober = threading.Thread(
                target=_probe_until_closed,
                args=(weakref.ref(self), self._closed),
                name=f"mgecache-{self.name}-probe",
                daemon=True,
            )
            self._prober.start()

    def _answers(self) -> bool:
        """Whether Redis answers the probe (no probe: assumed to)."""
        try:
            if self._probe is not None:
                self._probe()
        except Exception:
            return False
        return True

    def _probe_step(self) -> bool:
        """One step of the background probe: ping if still open. True once closed (the probe thread ends)."""
        if self._opened_at is not None:
            if self._answers():
                self.record_success()
            else:
                self.record_failure()
        with self._lock:
            # Decided under the lock: a breaker that reopens after this sees no probe and starts one.
            if self._opened_at is None:
                self._prober = None
                return True
            return False


_breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Threads do not survive fork, and a lock held by one of them in the parent stays held.
    for breaker in list(_breakers):
        breaker._lock = threading.Lock()
        breaker._prober = None
        breaker._verifier = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _probe_until_closed(ref: weakref.ReferenceType[CircuitBreaker], closed: threading.Event) -> None:
    """The background probe: every ``reset_seconds``, ping until the breaker closes or is dropped."""
    while True:
        breaker = ref()
        if breaker is None:
            return
        wait = breaker.reset_seconds
        del breaker  # not held while waiting
        closed.wait(wait)  # returns at once if the breaker closed meanwhile
        breaker = ref()
        if breaker is None or breaker._probe_step():
            return
        del breaker


def _error_log_interval() -> float:
    return float(conf.get("ERROR_LOG_INTERVAL_SECONDS"))


class RedisGuard:
    """Runs cache operations so that a Redis problem becomes a counted, logged miss."""

    def __init__(self, breaker: CircuitBreaker, *, layer: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.breaker = breaker
        self.layer = layer
        self._clock = clock
        self._logs: dict[str, LogInterval] = {}

    def _failed(self, operation: str, exc: BaseException | None) -> None:
        metrics.CACHE_ERRORS.labels(self.layer, operation).inc()
        metrics.CACHE_FAIL_OPEN.labels(self.layer, operation, "skipped" if exc is None else "failed").inc()
        _count_fail_open(self.layer, operation, exc is None)
        log = self._logs.get(operation)
        if log is None:
            log = self._logs.setdefault(operation, LogInterval(_error_log_interval, clock=self._clock))
        if log.due():
            if exc is None:
                logger.warning("cache %s %s skipped: Redis circuit breaker is open", self.layer, operation)
            else:
                logger.warning("cache %s %s failed open: %s: %s", self.layer, operation, type(exc).__name__, exc)

    def run(self, operation: str, fn: Callable[[], T], default: T) -> T:
        if not self.breaker.allow():
            self._failed(operation, None)
            return default
        try:
            result = fn()
        except (redis.RedisError, OSError, ClusterClientError) as exc:
            self.breaker.record_failure(exc)
            self._failed(operation, exc)
            return default
        self.breaker.record_success()
        return result

    async def arun(self, operation: str, fn: Callable[[], Awaitable[T]], default: T) -> T:
        if not self.breaker.allow():
            self._failed(operation, None)
            return default
        try:
            result = await fn()
        except (TimeoutError, redis.RedisError, OSError, ClusterClientError) as exc:
            self.breaker.record_failure(exc)
            self._failed(operation, exc)
            return default
        self.breaker.record_success()
        return result


def _count_fail_open(layer: str, operation: str, skipped: bool) -> None:
    """Durable (cross-process) count of calls served without Redis, for the operator console.

    Buffered like every durable counter: an outage's count reaches Redis once it is back.
    """
    from cache_app.core.counters import get_counters  # counters builds on this module

    get_counters().incr(FAIL_OPEN_LAYER, f"{'skipped' if skipped else 'failed'}:{layer}:{operation}")


# The durable counters' hash of fail-open events: fields ``failed|skipped:<layer>:<operation>``.
FAIL_OPEN_LAYER = "fail_open"


@process_wide
def get_breaker() -> CircuitBreaker:
    """The process-wide breaker for the configured Redis server (shared by sync and async paths)."""
    return CircuitBreaker(probe=lambda: get_redis().ping(), name="default")
