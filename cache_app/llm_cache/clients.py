"""Redis clients the LLM cache derives for itself."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff


def derive_async_client(client: Any) -> Any:
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
