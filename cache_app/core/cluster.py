"""Redis Cluster for the cache layers (``MGECACHE['REDIS_CLUSTER_NODES']``), and per-node iteration.

* :class:`CacheCluster` is redis-py's ``RedisCluster`` whose scripts run with EVAL. EVALSHA
  in a cluster pipeline fails with NOSCRIPT on a node that never loaded the script (a
  promoted replica after a failover, a node added later) and redis-py does not reload it
  there; our scripts are under 1 KB and Redis caches their compiled form, so EVAL costs
  a few hundred bytes per call and never fails that way.
* :class:`ThreadedCluster` is the asyncio face of the same sync client: each call runs in a
  worker thread (``asyncio.to_thread``). redis-py 8.1's ``redis.asyncio.RedisCluster`` is
  about twice as fast in a micro-benchmark (200 concurrent callers, 0 errors), but under the
  load test (2 gunicorn workers, CPU saturated, no failover) it lost connections mid-command
  ("Error UNKNOWN while writing to socket") and once raised ``AttributeError: 'NoneType'
  object has no attribute 'writelines'`` from inside the client, which is not a RedisError,
  so it reached a caller as a 500. The sync cluster client is thread-safe, keeps one pool per
  node shared by the sync and async paths, and had no such error in the same runs.
* :func:`node_clients` / :func:`scan_pages`: reclaim, statistics and the console census
  SCAN every primary (on a single Redis, the one server).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.retry import Retry

logger = logging.getLogger(__name__)


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


class _ThreadedPipeline:
    """A sync cluster pipeline with an awaitable ``execute`` (commands are queued synchronously)."""

    def __init__(self, pipe: Any) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._pipe, name)

        def queue(*args: Any, **kwargs: Any) -> _ThreadedPipeline:
            method(*args, **kwargs)
            return self

        return queue

    def eval(self, script: Any, numkeys: int, *keys_and_args: Any) -> _ThreadedPipeline:
        # redis-py's sync ClusterPipeline.eval() is not the EVAL command: queue it by name.
        self._pipe.execute_command("EVAL", script, numkeys, *keys_and_args)
        return self

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await asyncio.to_thread(self._pipe.execute, raise_on_error)


class _ThreadedScript:
    def __init__(self, script: EvalScript) -> None:
        self._script = script

    async def __call__(self, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        if isinstance(client, _ThreadedPipeline):
            self._script(keys=keys, args=args, client=client._pipe)
            return client
        return await asyncio.to_thread(self._script, keys, args)


class ThreadedCluster:
    """The asyncio interface the cache layers use, on the thread-safe sync :class:`CacheCluster`."""

    def __init__(self, cluster: CacheCluster) -> None:
        self.cluster = cluster

    def pipeline(self, transaction: bool = False) -> _ThreadedPipeline:
        return _ThreadedPipeline(self.cluster.pipeline(transaction=transaction))

    def register_script(self, script: Any) -> _ThreadedScript:
        return _ThreadedScript(EvalScript(self.cluster, script))

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.cluster, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(functools.partial(method, *args, **kwargs))

        return call

    async def aclose(self) -> None:  # the sync client is process-wide: closed with the process
        return None


def node_clients(client: Any) -> list[Any]:
    """A plain client per primary of a Cluster; ``[client]`` for a single server."""
    if isinstance(client, ThreadedCluster):
        client = client.cluster
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

# What a Sentinel or Cluster failover looks like until a replica is promoted: connections
# refused or reset, slots with no primary (CLUSTERDOWN, TRYAGAIN, no node for a slot), a
# demoted master answering READONLY. MasterDownError is a ClusterDownError. Waves retry
# these; past the retries the API answers 503.
FAILOVER_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ReadOnlyError,
    ClusterClientError,
)


def reload_slot_map(client: Any) -> None:
    """Reload a Cluster client's slot map, so the next attempt goes to a promoted replica (else nothing).

    redis-py does so itself after a single command's connection error, but after a failed
    transaction pipeline only on every ``reinitialize_steps``-th failure: without this, a process
    with no other traffic kept writing to the dead primary until its retries ran out.
    """
    nodes = getattr(client, "nodes_manager", None)  # None: one server or Sentinel
    if nodes is None:
        return
    try:
        nodes.initialize()
    except FAILOVER_ERRORS:  # no node answered yet: the next attempt fails and tries again
        logger.debug("reloading the cluster's slot map failed", exc_info=True)
