"""DRF scoped throttles, counted per API key (else user, else IP) in Redis, O(1) per request.

Rates are ``MGECACHE['THROTTLE_RATES']``; over a rate DRF answers 429 with ``Retry-After``.

DRF's own ``SimpleRateThrottle`` keeps every request's timestamp in one cache entry and reads
and rewrites the whole list on each request: the work grows with the rate (at 1200/minute,
1200 floats serialised twice per request), and in the load test it was a third of a cache
hit's CPU. :class:`CounterRateThrottle` keeps DRF's interface (``rate``, ``allow_request``,
``wait``) but counts with a sliding-window counter: a counter per fixed window, and the
previous window's count weighted by how much of it the sliding window still covers. One Lua
call reads both counters and counts an allowed request atomically, so concurrent workers
cannot overshoot. The estimate assumes the previous window's requests were spread evenly; it
is Cloudflare's and nginx's approximation, within a fraction of one window's burst.

The counters live on Django's default Redis (``REDIS_URL``), next to the sessions and the
broker, not on a cache Cluster. If that Redis is down the throttle lets requests through,
like the caches themselves.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from django_redis import get_redis_connection
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from cache_app.core import conf, keys
from cache_app.models import PipelineAPIKey

logger = logging.getLogger(__name__)

# KEYS: this window's counter, the previous window's. ARGV: limit, the previous window's
# weight (0..1], TTL in ms. Returns {allowed (0/1), this window's count, the previous count}.
_COUNT_LUA = """
local counts = redis.call('MGET', KEYS[1], KEYS[2])
local current = tonumber(counts[1] or '0')
local previous = tonumber(counts[2] or '0')
if previous * tonumber(ARGV[2]) + current >= tonumber(ARGV[1]) then
  return {0, current, previous}
end
redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, current + 1, previous}
"""


class CounterRateThrottle(SimpleRateThrottle):
    """A DRF throttle with a sliding-window counter (module docstring). ``timer`` is DRF's clock."""

    scope = ""
    num_requests: int  # set by DRF's __init__ from the rate
    duration: int  # seconds
    _elapsed = 0.0

    def ident(self, request: Any, view: Any) -> str | None:
        """Who is counted; None lets the request through uncounted."""
        raise NotImplementedError

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.rate is None:
            return True
        ident = self.ident(request, view)
        if ident is None:
            return True
        self.now = self.timer()
        window, self._elapsed = divmod(self.now, self.duration)
        weight = 1.0 - self._elapsed / self.duration
        counters = [keys.throttle(self.scope, ident, int(window) - back) for back in (0, 1)]
        try:
            client = get_redis_connection("default")
            allowed, current, previous = client.eval(
                _COUNT_LUA, 2, *counters, self.num_requests, repr(weight), int(self.duration * 2000)
            )
        except (redis.RedisError, OSError) as exc:  # fail open: a throttle outage must not stop the pipeline
            logger.warning("throttle %s skipped: Redis unavailable (%s)", self.scope, type(exc).__name__)
            return True
        self._counts = (int(current), int(previous))
        return bool(allowed)

    def wait(self) -> float | None:
        """Seconds until the weighted count is below the rate again (DRF sends it as Retry-After)."""
        current, previous = getattr(self, "_counts", (0, 0))
        duration, limit, elapsed = float(self.duration), self.num_requests, self._elapsed
        if current < limit:
            # Only the previous window's share is over: it shrinks by previous / duration per second.
            weight_needed = (limit - current) / previous if previous else 1.0
            return max(0.0, duration * (1.0 - weight_needed) - elapsed)
        # This window alone is full: wait for it to become the previous one, then for its share to shrink.
        return (duration - elapsed) + duration * (1.0 - limit / current)


class MgecacheThrottle(CounterRateThrottle):
    def get_rate(self) -> str:
        return conf.get("THROTTLE_RATES")[self.scope]

    def ident(self, request: Request, view: Any) -> str:
        if isinstance(request.auth, PipelineAPIKey):
            return f"key:{request.auth.prefix}"
        if request.user and request.user.is_authenticated:
            return f"user:{request.user.pk}"
        return f"ip:{self.get_ident(request)}"


class GenerateThrottle(MgecacheThrottle):
    """Generation, retrieval and waves."""

    scope = "generate"


class ReadThrottle(MgecacheThrottle):
    """Statistics and wave results."""

    scope = "read"


class InvalidateThrottle(MgecacheThrottle):
    scope = "invalidate"
