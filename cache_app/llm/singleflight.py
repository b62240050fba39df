"""Single-flight: N concurrent identical requests make one upstream call.

Within a process, followers await the leader's future and get its result or its
exception. Across processes, a short Redis lock (``SET NX PX``, value = the leader's
token) elects the leader. A waiter in another process reads the token, then polls (with
a bounded wait) for that leader's published outcome:

* a result   -> the waiter returns it (decoded);
* an error   -> the waiter raises :class:`LeaderFailedError`; nothing was cached;
* lock gone, no outcome -> the leader died: the waiter tries to take the lock itself, so a
  lost leader costs at most one extra call;
* wait exhausted -> the waiter makes its own call (no deadlock).

Outcomes are keyed by the leader's token, so a stale outcome can never answer a later
request. With Redis down the cross-process part is skipped (fail open): the in-process
merge remains.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis as AsyncRedis

from cache_app.core import keys, metrics
from cache_app.core.redis_client import RedisGuard, get_async_redis, get_breaker

T = TypeVar("T")

# Returns {1, token} when this caller took the lock, else {0, current holder's token or false}.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {1, ARGV[1]} end
return {0, redis.call('GET', KEYS[1])}
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderFailedError(RuntimeError):
    """The identical request this one waited for failed (in another process)."""


class SingleFlight(Generic[T]):
    """Merges concurrent calls that share a key.

    ``encode``/``decode`` turn a result into JSON-able data and back, for waiters in other
    processes. ``lock_ttl`` bounds how long a dead leader holds others back; ``max_wait``
    bounds a waiter's total wait.
    """

    def __init__(
        self,
        *,
        encode: Callable[[T], Any],
        decode: Callable[[Any], T],
        redis: AsyncRedis | None = None,
        guard: RedisGuard | None = None,
        lock_ttl: float = 30.0,
        max_wait: float = 60.0,
        outcome_ttl: float = 30.0,
        poll_initial: float = 0.002,
        poll_max: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._encode = encode
        self._decode = decode
        self._redis = redis
        self._guard = guard or RedisGuard(get_breaker(), layer="singleflight")
        self.lock_ttl = lock_ttl
        self.max_wait = max_wait
        self.outcome_ttl = outcome_ttl
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self._clock = clock
        self._inflight: dict[tuple[int, str], asyncio.Future] = {}

    def _client(self) -> AsyncRedis:
        return self._redis if self._redis is not None else get_async_redis()

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        """``work()``'s result, shared with every concurrent caller of the same ``key``."""
        loop = asyncio.get_running_loop()
        local_key = (id(loop), key)
        existing = self._inflight.get(local_key)
        if existing is not None:
            metrics.SINGLEFLIGHT_WAITERS.labels("process").inc()
            return await asyncio.shield(existing)
        future: asyncio.Future = loop.create_future()
        self._inflight[local_key] = future
        try:
            result = await self._across_processes(key, work)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: there may be no follower to read it
            raise
        else:
            future.set_result(result)
            return result
        finally:
            self._inflight.pop(local_key, None)

    async def _across_processes(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        lock_key = keys.singleflight_lock(key)
        token = secrets.token_hex(8)
        deadline = self._clock() + self.max_wait
        counted = False
        while True:
            got = await self._guard.arun(
                "singleflight",
                lambda: self._client().eval(_ACQUIRE, 1, lock_key, token, int(self.lock_ttl * 1000)),
                None,
            )
            if got is None or int(got[0]) == 1:  # ours, or Redis is down (lead without a lock)
                return await self._lead(key, lock_key, token, work, locked=got is not None)
            if not got[1]:
                continue  # released between SET and GET: try again
            if not counted:
                counted = True
                metrics.SINGLEFLIGHT_WAITERS.labels("redis").inc()
            leader = got[1].decode() if isinstance(got[1], bytes) else str(got[1])
            outcome = await self._await_leader(key, lock_key, leader, deadline)
            if outcome is _LEADER_GONE:
                continue
            if outcome is _TIMED_OUT:
                return await work()
            if outcome.get("ok"):
                return self._decode(outcome["value"])
            raise LeaderFailedError(f"the identical in-flight request failed: {outcome.get('error')}")

    async def _await_leader(self, key: str, lock_key: str, leader: str, deadline: float) -> Any:
        outcome_key = keys.singleflight_outcome(key, leader)
        delay = self.poll_initial

        async def poll() -> list:
            pipe = self._client().pipeline(transaction=False)
            pipe.get(outcome_key)
            pipe.get(lock_key)
            return await pipe.execute()

        while True:
            polled = await self._guard.arun("singleflight", poll, None)
            if polled is None:
                return _TIMED_OUT  # Redis went away: stop waiting, do the work
            raw, holder = polled
            if raw is not None:
                return json.loads(raw)
            holder = holder.decode() if isinstance(holder, bytes) else holder
            if holder != leader:
                return _LEADER_GONE
            if self._clock() >= deadline:
                return _TIMED_OUT
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.poll_max)

    async def _lead(self, key: str, lock_key: str, token: str, work: Callable[[], Awaitable[T]], *, locked: bool) -> T:
        if not locked:
            return await work()
        try:
            result = await work()
        except Exception as exc:
            await self._finish(key, lock_key, token, {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]})
            raise
        except BaseException:
            # Cancelled: publish nothing; waiters find the lock gone and one of them takes over.
            await self._finish(key, lock_key, token, None)
            raise
        await self._finish(key, lock_key, token, {"ok": True, "value": self._encode(result)})
        return result

    async def _finish(self, key: str, lock_key: str, token: str, outcome: dict | None) -> None:
        # Publish before releasing, so a waiter never sees "lock gone, no outcome" for a live answer.
        client = self._client()
        pipe = client.pipeline(transaction=False)
        if outcome is not None:
            pipe.set(keys.singleflight_outcome(key, token), json.dumps(outcome), px=int(self.outcome_ttl * 1000))
        pipe.eval(_RELEASE, 1, lock_key, token)
        await self._guard.arun("singleflight", pipe.execute, None)


_LEADER_GONE: Any = object()
_TIMED_OUT: Any = object()
