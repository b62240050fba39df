"""Redis Cluster for the cache layers (``MGECACHE['REDIS_CLUSTER_NODES']``), and per-node iteration.

* :class:`CacheCluster` is redis-py's ``RedisCluster`` whose scripts run with EVAL. EVALSHA
  in a cluster pipeline fails with NOSCRIPT on a node that never loaded the script (a
  promoted replica after a failover, a node added later) and redis-py does not reload it
  there; our scripts are under 1 KB and Redis caches their compiled form, so EVAL costs
  a few hundred bytes per call and never fails that way.
* :class:`AsyncCacheCluster` is redis.asyncio's ``RedisCluster`` with the same EVAL scripts,
  one per event loop (asyncio connections cannot cross loops). An earlier attempt ran the
  sync client in threads because the asyncio client had dropped connections under
  concurrency; with redis-py 8.1 that did not reproduce (200 concurrent callers, 60,000
  pipelined round trips, 0 errors; the failover tests pass with it), and it does twice the
  round trips per second of the threaded design on this machine (docs/operations.md).
* :func:`node_clients` / :func:`scan_pages`: reclaim, statistics and the console census
  SCAN every primary (on a single Redis, the one server).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import redis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.retry import Retry


class EvalScript(Script):
    """A Script that always sends EVAL (works in cluster pipelines and on any node)."""

    def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        keys, args = list(keys or []), list(args or [])
        target = self.registered_client if client is None else client
        # execute_command: ClusterPipeline.eval() is not the EVAL command.
        return target.execute_command("EVAL", self.script, len(keys), *keys, *args)


class CacheCluster(RedisCluster):
    """RedisCluster with EVAL-only scripts (see the module docstring)."""

    def register_script(self, script: Any) -> Script:
        return EvalScript(self, script)


def parse_nodes(items: list[str] | tuple[str, ...]) -> list[tuple[str, int]]:
    """``["host:port", ...]`` -> ``[(host, port), ...]``; raises ValueError."""
    nodes = []
    for item in items:
        host, _, port = str(item).strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"cluster node must be host:port, got {item!r}")
        nodes.append((host, int(port)))
    return nodes


def make_cluster(nodes: list[tuple[str, int]], *, socket_timeout: float, connect_timeout: float) -> CacheCluster:
    # One attempt per call: the breaker, not retries, bounds an outage (a failover's gap
    # becomes fail-open misses instead of a stalled caller). redis-py still follows
    # MOVED/ASK and refreshes its slot map on connection errors.
    return CacheCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=Retry(NoBackoff(), 1),
        require_full_coverage=False,
    )


class AsyncEvalScript:
    """The asyncio twin of :class:`EvalScript` (queues on a cluster pipeline, or awaits the call)."""

    def __init__(self, registered_client: Any, script: Any) -> None:
        self.registered_client = registered_client
        self.script = script

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        keys, args = list(keys or []), list(args or [])
        target = self.registered_client if client is None else client
        reply = target.execute_command("EVAL", self.script, len(keys), *keys, *args)
        return await reply if inspect.isawaitable(reply) else reply  # a pipeline queues and returns itself


class AsyncCacheCluster(AsyncRedisCluster):
    """redis.asyncio's RedisCluster with EVAL-only scripts; one per event loop (see get_async_redis)."""

    def register_script(self, script: Any) -> Any:
        return AsyncEvalScript(self, script)


def make_async_cluster(
    nodes: list[tuple[str, int]], *, socket_timeout: float, connect_timeout: float
) -> AsyncCacheCluster:
    return AsyncCacheCluster(
        startup_nodes=[AsyncClusterNode(host, port) for host, port in nodes],
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry=AsyncRetry(NoBackoff(), 1),
        require_full_coverage=False,
    )


def node_clients(client: Any) -> list[Any]:
    """A plain client per primary of a Cluster; ``[client]`` for a single server."""
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


def scan_pages(client: Any, pattern: str, count: int) -> Iterator[list[Any]]:
    """SCAN pages of ``pattern`` over every primary (empty pages included, so callers can stop early)."""
    for node in node_clients(client):
        cursor = 0
        while True:
            cursor, page = node.scan(cursor, match=pattern, count=count)
            yield page
            if int(cursor) == 0:
                break


# Raised by the cluster client outside redis.RedisError (e.g. no node serves a slot yet).
ClusterClientError = redis.exceptions.RedisClusterException
