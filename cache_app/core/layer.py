"""What every Redis-backed cache layer shares: injected collaborators and the miss->set handshake.

``LLMPromptCache`` and ``RAGQueryCache`` subclass :class:`RedisCacheLayer`. Collaborators
are injected, with defaults from settings: the sync Redis client, an asyncio client (or a
factory), the policy source, the durable counters, and the fail-open guard. With an
injected client and no guard/breaker, a private circuit breaker probes that client.

The miss -> set handshake: ``lookup`` returns a :class:`Lookup`; on a miss it carries a
:class:`~cache_app.core.tags.WriteToken` (the scope tag the miss saw). The caller passes it
to ``set``, which is refused if the scope was invalidated since. A ``set`` without a token
writes under the scope's current tag.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Generic, Literal, NamedTuple, TypeVar

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from cache_app.core import keys, metrics
from cache_app.core.counters import DurableCounters, get_counters
from cache_app.core.policies import PolicySource, get_policy_source
from cache_app.core.redis_client import CircuitBreaker, RedisGuard, get_async_redis, get_breaker, get_redis
from cache_app.core.tags import WriteToken

logger = logging.getLogger(__name__)

# How an invalidation deletes the keys it made unreachable: now ("inline", returns the count),
# by a Celery task ("celery"), or not at all ("none": the periodic sweep will).
Reclaim = Literal["inline", "celery", "none"]
RECLAIM_MODES = ("inline", "celery", "none")


def check_reclaim_mode(reclaim: str) -> None:
    if reclaim not in RECLAIM_MODES:
        raise ValueError(f"reclaim must be 'inline', 'celery' or 'none', got {reclaim!r}")


class CacheUnavailableError(RuntimeError):
    """An invalidation could not reach Redis. (Lookups and writes never raise; this one must not lie.)"""


T = TypeVar("T")
SyncRedis = redis.Redis
AsyncRedis = redis.asyncio.Redis
# An asyncio client, or a zero-argument factory of one (called once per use, e.g. per event loop).
AsyncRedisSource = AsyncRedis | Callable[[], AsyncRedis]


class Lookup(NamedTuple, Generic[T]):
    """What a lookup found: ``hit`` (the cached value), or None and the ``token`` to hand to ``set``.

    ``token`` is None on a hit, on a bypass, and when Redis could not be read (a ``set``
    then writes under the current tag, as a ``set`` without a token always does). A tuple:
    it is built on every lookup, hits included.
    """

    hit: T | None
    token: WriteToken | None = None


def expected_tag(entry_key: str, token: WriteToken | None) -> bytes:
    """The tag a ``set`` of ``entry_key`` must still find (b"" = whatever is current)."""
    if token is None:
        return b""
    if not isinstance(token, WriteToken):
        raise TypeError(f"token must be the WriteToken of a lookup or None, got {type(token).__name__}")
    if token.key != entry_key:
        raise ValueError("token was handed out by a lookup of another entry")
    return token.tag


def _incr_all(client: SyncRedis, names: list[str]) -> int:
    """INCR every key in one non-transactional pipeline (on a Cluster: one batch per node)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.incr(name)
    return len(pipe.execute())


def derive_async_client(client: SyncRedis) -> AsyncRedis:
    """An asyncio client on the same server as an injected sync client."""
    kwargs = client.connection_pool.connection_kwargs
    if "server" in kwargs:  # fakeredis
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=kwargs["server"])
    wanted = ("host", "port", "db", "username", "password", "socket_timeout", "socket_connect_timeout")
    # redis-py's constructor default retries a timeout 10 times with backoff (seconds of
    # stall on a hung server); one immediate retry of a dropped connection is enough.
    retry = AsyncRetry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,))
    return redis.asyncio.Redis(retry=retry, **{k: kwargs[k] for k in wanted if k in kwargs})


class RedisCacheLayer:
    layer: ClassVar[str]

    def __init__(
        self,
        redis: SyncRedis | None = None,
        *,
        policies: PolicySource | None = None,
        clock: Callable[[], float] | None = None,
        counters: DurableCounters | None = None,
        guard: RedisGuard | None = None,
        breaker: CircuitBreaker | None = None,
        async_redis: AsyncRedisSource | None = None,
    ) -> None:
        self._redis = redis
        self._redis_injected = redis is not None  # `_redis` is also filled lazily with the default
        self._policies = policies
        self._clock = clock or time.time
        self._counters = counters
        if guard is None and breaker is None and redis is not None:
            breaker = CircuitBreaker(probe=redis.ping, name=f"{self.layer}-cache")
        self._own_guard = guard or (RedisGuard(breaker, layer=self.layer) if breaker is not None else None)
        self._default_guard: RedisGuard | None = None
        self._async_redis = async_redis
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis] = (
            weakref.WeakKeyDictionary()
        )

    # --- collaborators -------------------------------------------------------------------
    @property
    def redis(self) -> SyncRedis:
        if self._redis is None:
            self._redis = get_redis()
        return self._redis

    @property
    def guard(self) -> RedisGuard:
        if self._own_guard is not None:
            return self._own_guard
        breaker = get_breaker()  # the process-wide one; re-resolved if it was replaced
        if self._default_guard is None or self._default_guard.breaker is not breaker:
            self._default_guard = RedisGuard(breaker, layer=self.layer)
        return self._default_guard

    @property
    def policies(self) -> PolicySource:
        return self._policies or get_policy_source()

    @property
    def counters(self) -> DurableCounters:
        return self._counters or get_counters()

    def async_client(self) -> AsyncRedis:
        """The asyncio client for the running loop."""
        if self._async_redis is not None:
            if isinstance(self._async_redis, redis.asyncio.Redis):
                return self._async_redis
            return self._async_redis()
        if not self._redis_injected:
            return get_async_redis()  # the configured server (URL, Sentinel or embedded), per loop
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = derive_async_client(self.redis)
            self._async_clients[loop] = client
        return client

    # --- reclaim scheduling ----------------------------------------------------------------
    def _enqueue_reclaim(self, masterplan_id: str | None, *, layer: bool) -> None:
        """Enqueue the Celery task that deletes one scope's (or, with ``layer``, every scope's) dead keys."""
        raise NotImplementedError

    def _schedule_reclaim(self, masterplan_id: str | None, *, layer: bool = False) -> None:
        """Best effort: hand deletion to Celery (the periodic sweep catches anything this misses)."""
        try:
            self._enqueue_reclaim(masterplan_id, layer=layer)
        except Exception as exc:  # broker down too: the periodic sweep will do it
            logger.warning("could not schedule %s cache reclaim: %s: %s", self.layer, type(exc).__name__, exc)

    # --- invalidation: one INCR makes a scope (or the layer) unreachable --------------------
    def _generation_key(self, masterplan_id: str | None) -> str:
        raise NotImplementedError

    def _epoch_keys(self) -> list[str]:
        """Every copy of the layer epoch (one per cluster slot; see cache_app.core.keys)."""
        raise NotImplementedError

    def reclaim_masterplan(self, masterplan_id: Any) -> int:
        raise NotImplementedError

    def reclaim_dead_keys(self) -> int:
        raise NotImplementedError

    async def _areclaim_masterplan(self, masterplan_id: str | None) -> int:
        # Deletion is a batch job of SCAN pages; by default it runs on the sync client in a thread.
        return await asyncio.to_thread(self.reclaim_masterplan, masterplan_id)

    def _invalidated(self, masterplan_id: str | None) -> None:
        metrics.CACHE_INVALIDATIONS.labels(self.layer).inc()
        self.counters.incr(self.layer, "invalidations", masterplan_id=masterplan_id)

    def _unavailable(self, masterplan_id: str | None, *, layer: bool = False) -> CacheUnavailableError:
        what = "" if layer else f" scope {keys.scope(masterplan_id)}"
        return CacheUnavailableError(f"could not invalidate the {self.layer} cache{what}")

    def invalidate_masterplan(self, masterplan_id: Any, *, reclaim: Reclaim = "inline") -> int:
        """Make every entry of the masterplan unreachable (one INCR), then have them deleted.

        ``masterplan_id=None`` means the global scope. ``reclaim``: ``"inline"`` deletes the
        dead entries now (SCAN + batched UNLINK) and returns how many it deleted;
        ``"celery"`` hands deletion to a Celery task and ``"none"`` leaves it to the periodic
        sweep: both return 0. If inline deletion fails after the INCR, it is handed to Celery
        and 0 is returned. Raises CacheUnavailableError if Redis cannot record the
        invalidation itself (an invalidation must not pretend).
        """
        check_reclaim_mode(reclaim)
        normalized_mp = keys.normalize_masterplan_id(masterplan_id)
        gen_key, client = self._generation_key(normalized_mp), self.redis
        if self.guard.run("invalidate", lambda: client.incr(gen_key), None) is None:
            raise self._unavailable(normalized_mp)
        self._invalidated(normalized_mp)
        return self._after_invalidation(normalized_mp, reclaim)

    async def ainvalidate_masterplan(self, masterplan_id: Any, *, reclaim: Reclaim = "inline") -> int:
        check_reclaim_mode(reclaim)
        normalized_mp = keys.normalize_masterplan_id(masterplan_id)
        gen_key, client = self._generation_key(normalized_mp), self.async_client()
        if await self.guard.arun("invalidate", lambda: client.incr(gen_key), None) is None:
            raise self._unavailable(normalized_mp)
        self._invalidated(normalized_mp)
        if reclaim != "inline":
            if reclaim == "celery":
                self._schedule_reclaim(normalized_mp)
            return 0
        try:
            return await self._areclaim_masterplan(normalized_mp)
        except (TimeoutError, redis.RedisError, OSError) as exc:
            self._reclaim_failed(normalized_mp, exc)
            return 0

    def invalidate_all(self, *, reclaim: Reclaim = "inline") -> int:
        """Make every entry of this layer unreachable (one INCR of the layer epoch) and have them deleted.

        Touches only this layer's keys: never FLUSHDB (Redis may hold the broker and other
        apps). ``reclaim`` and the return value as for :meth:`invalidate_masterplan`.
        """
        check_reclaim_mode(reclaim)
        epoch_keys, client = self._epoch_keys(), self.redis
        if self.guard.run("invalidate", lambda: _incr_all(client, epoch_keys), None) is None:
            raise self._unavailable(None, layer=True)
        self._invalidated(None)
        return self._after_invalidation(None, reclaim, layer=True)

    def _after_invalidation(self, masterplan_id: str | None, reclaim: Reclaim, *, layer: bool = False) -> int:
        if reclaim != "inline":
            if reclaim == "celery":
                self._schedule_reclaim(masterplan_id, layer=layer)
            return 0
        try:
            return self.reclaim_dead_keys() if layer else self.reclaim_masterplan(masterplan_id)
        except (redis.RedisError, OSError) as exc:
            self._reclaim_failed(masterplan_id, exc, layer=layer)
            return 0

    def _reclaim_failed(self, masterplan_id: str | None, exc: BaseException, *, layer: bool = False) -> None:
        metrics.CACHE_ERRORS.labels(self.layer, "reclaim").inc()
        logger.warning("%s cache reclaim failed (%s: %s); deferring it to Celery", self.layer, type(exc).__name__, exc)
        self._schedule_reclaim(masterplan_id, layer=layer)
