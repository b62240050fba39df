"""Idempotency-Key support: a retried request gets the first response, and no work is done twice.

:meth:`IdempotencyStore.run` (``key``, a digest of the request body, the work):

* first time: the key is taken (an *in-flight* record, expiring after
  ``IDEMPOTENCY_LOCK_SECONDS`` so a crashed request cannot block it for a day), the work
  runs, and its JSON-able result replaces the record for ``IDEMPOTENCY_TTL_SECONDS`` (24 h);
* same key, same body, done: the stored result is returned (``replayed=True``), no work;
* same key, different body: :class:`IdempotencyConflictError` (the API answers 422);
* same key while the first is still running: wait up to ``wait_seconds`` for its result,
  then :class:`IdempotencyInProgressError` (the API answers 409, retry later);
* the work raises: the key is released, so a retry may run it again.

Records live in Redis (``keys.idempotency``; the client's key is hashed with a scope such as
the route and the caller). Redis is this feature's storage, so a Redis error propagates: the
request is refused rather than risking a second piece of work.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cache_app.core import conf, keys, metrics
from cache_app.core.redis_client import get_redis

MAX_KEY_CHARS = 255
_TOKEN_CHARS = 32  # hex; every record starts with the token of the request that wrote it

# Take the key if free (in-flight record, PX lock); else return the current record.
_BEGIN = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
# Replace our in-flight record with the result (EX ttl); 0 if the record is no longer ours.
_FINISH = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 32) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""
# Delete our in-flight record (the work failed), never someone else's.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, 32) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class IdempotencyConflictError(Exception):
    """The key was used before with a different request body."""


class IdempotencyInProgressError(Exception):
    """The first request with this key is still running; ``retry_after`` seconds is a fair wait."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class IdempotentResult:
    value: Any  # the first request's result (JSON-able)
    replayed: bool  # True: returned from the record, no work was done now


def check_key(key: Any) -> str:
    """The key as given, or ValueError: 1 to 255 printable ASCII characters."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS or not all(" " <= c <= "~" for c in key):
        raise ValueError(f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} printable ASCII characters")
    return key


def body_digest(body: Any) -> str:
    """A digest of a parsed request body that ignores key order and whitespace."""
    return keys.digest(body)


def _record(token: str, state: str, digest: str, value: Any = None) -> str:
    return token + json.dumps({"state": state, "digest": digest, "value": value}, separators=(",", ":"))


def _parse(raw: str | bytes) -> dict[str, Any]:
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return json.loads(text[_TOKEN_CHARS:])


class IdempotencyStore:
    """Idempotent execution keyed by client-chosen keys; collaborators injectable for tests."""

    def __init__(
        self,
        redis: Any = None,
        *,
        ttl_seconds: int | None = None,
        lock_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> None:
        self._redis = redis
        self._ttl = ttl_seconds
        self._lock = lock_seconds
        self._clock = clock
        self._sleep = sleep

    @property
    def redis(self) -> Any:
        return self._redis if self._redis is not None else get_redis()

    @property
    def ttl_seconds(self) -> int:
        return int(conf.get("IDEMPOTENCY_TTL_SECONDS") if self._ttl is None else self._ttl)

    @property
    def lock_seconds(self) -> float:
        return float(conf.get("IDEMPOTENCY_LOCK_SECONDS") if self._lock is None else self._lock)

    def run(
        self, key: str, digest: str, fn: Callable[[], Any], *, scope: str = "", wait_seconds: float = 0.0
    ) -> IdempotentResult:
        """``fn()``'s result, computed at most once per (scope, key) within the TTL. See the module docstring."""
        record_key = keys.idempotency(scope, check_key(key))
        token = secrets.token_hex(_TOKEN_CHARS // 2)
        deadline = self._clock() + max(0.0, wait_seconds)
        interval = 0.01
        while True:
            current = self.redis.eval(
                _BEGIN, 1, record_key, _record(token, "in_flight", digest), max(1, int(self.lock_seconds * 1000))
            )
            if current is None:
                metrics.IDEMPOTENT_REQUESTS.labels("first").inc()
                return IdempotentResult(self._work(record_key, token, digest, fn), replayed=False)
            record = _parse(current)
            if record["digest"] != digest:
                metrics.IDEMPOTENT_REQUESTS.labels("conflict").inc()
                raise IdempotencyConflictError("this Idempotency-Key was already used with a different request body")
            if record["state"] == "done":
                metrics.IDEMPOTENT_REQUESTS.labels("replayed").inc()
                return IdempotentResult(record["value"], replayed=True)
            now = self._clock()
            if now >= deadline:
                metrics.IDEMPOTENT_REQUESTS.labels("in_progress").inc()
                raise IdempotencyInProgressError("a request with this Idempotency-Key is still in progress")
            self._sleep(min(interval, deadline - now))
            interval = min(interval * 2, 0.25)

    def _work(self, record_key: str, token: str, digest: str, fn: Callable[[], Any]) -> Any:
        try:
            done = _record(token, "done", digest, fn())  # not JSON-able: a bug, surfaced here
        except BaseException:
            self.redis.eval(_RELEASE, 1, record_key, token)
            raise
        self.redis.eval(_FINISH, 1, record_key, token, done, self.ttl_seconds)
        return _parse(done)["value"]  # exactly what a replay will return
