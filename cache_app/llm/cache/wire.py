"""The LLM hit path's one round trip, without redis-py's per-command machinery.

A hit is one ``MGET``. Through ``Redis.execute_command`` it pays, besides the round trip,
redis-py's pool checkout and release (a lock, a ``poll`` for stray bytes, observability
events) and its command dispatch: about 14 µs of a 40 µs GET on a 2-core machine. Here
the command is packed once and sent on a connection this cache owns, and the reply is
read by the same connection's parser (hiredis when installed).

* sync: one private connection per thread (no lock, no checkout), rebuilt after a fork;
* asyncio: a free list of private connections per client (one client per event loop): a
  coroutine takes one, uses it without awaiting anything else, and gives it back.

Only for a plain ``redis.Redis`` / ``redis.asyncio.Redis`` on a plain connection pool
(TCP, TLS or Unix socket) returning bytes; anything else (Sentinel, fakeredis, client-side
caching) goes through ``execute_command`` as before. On any error the connection is
dropped and the error raised, so the guard sees exactly what redis-py would have raised;
as redis-py's pool would, a connection that was idle in our hands and turns out closed (a
Redis restart, an idle timeout) is replaced once before a ``ConnectionError`` counts.
Connections: at most one per thread, and per event loop at most the lookups in flight at
once (beyond ``ASYNC_SPARE`` idle ones, extra connections are closed after use).
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

import redis
import redis.asyncio

ASYNC_SPARE = 16  # idle async connections kept per client; more in flight are closed after use
_SYNC_POOLS = (redis.ConnectionPool,)
_SYNC_CONNECTIONS = (redis.Connection, redis.SSLConnection, redis.UnixDomainSocketConnection)
_ASYNC_POOLS = (redis.asyncio.ConnectionPool,)
_ASYNC_CONNECTIONS = (redis.asyncio.Connection, redis.asyncio.SSLConnection, redis.asyncio.UnixDomainSocketConnection)


def _plain(pool: Any, pools: tuple[type, ...], connections: tuple[type, ...]) -> bool:
    kwargs = getattr(pool, "connection_kwargs", {})
    return (
        type(pool) in pools
        and getattr(pool, "connection_class", None) in connections
        and not kwargs.get("decode_responses", False)
        and getattr(pool, "cache", None) is None
    )


class SyncMget:
    """``MGET`` on the given client, over a private connection per thread when the client is plain."""

    def __init__(self, client: Any) -> None:
        self.client = client
        pool: Any = getattr(client, "connection_pool", None)
        self.lean = _plain(pool, _SYNC_POOLS, _SYNC_CONNECTIONS)
        if self.lean:
            self._make = pool.connection_class
            self._kwargs = dict(pool.connection_kwargs)
        self._local = threading.local()

    def __call__(self, keys: tuple[str, ...]) -> Any:
        if not self.lean:
            return self.client.execute_command("MGET", *keys)
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.pid != os.getpid():  # first use in this thread, or a forked child
            conn = self._local.conn = self._make(**self._kwargs)
        packed = conn.pack_command("MGET", *keys)
        reused = conn._sock is not None
        try:
            return self._exchange(conn, packed)
        except redis.ConnectionError:
            if not reused:
                raise
            return self._exchange(conn, packed)  # it was closed while idle: once more, on a new socket

    @staticmethod
    def _exchange(conn: Any, packed: Any) -> Any:
        try:
            conn.send_packed_command(packed, check_health=False)
            return conn.read_response()
        except BaseException:
            conn.disconnect()
            raise

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.disconnect()
            self._local.conn = None


class AsyncMget:
    """``MGET`` on an asyncio client, over private connections (a free list per client)."""

    def __init__(self) -> None:
        self._free: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
        self._plain: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        self._closing: set[asyncio.Task[Any]] = set()

    def _is_plain(self, client: Any) -> bool:
        plain = self._plain.get(client)
        if plain is None:
            plain = self._plain[client] = _plain(
                getattr(client, "connection_pool", None), _ASYNC_POOLS, _ASYNC_CONNECTIONS
            )
        return plain

    async def __call__(self, client: Any, keys: tuple[str, ...]) -> Any:
        if not self._is_plain(client):
            return await client.execute_command("MGET", *keys)
        free = self._free.get(client)
        if free is None:
            free = self._free[client] = []
        pool = client.connection_pool
        if free:
            try:
                return await self._exchange(free, free.pop(), keys)
            except redis.ConnectionError:
                pass  # it was closed while idle (a restart, an idle timeout): once more, on a new connection
        return await self._exchange(free, pool.connection_class(**pool.connection_kwargs), keys)

    async def _exchange(self, free: list[Any], conn: Any, keys: tuple[str, ...]) -> Any:
        try:
            await conn.send_packed_command(conn.pack_command("MGET", *keys), check_health=False)
            reply = await conn.read_response()
        except BaseException:
            self._drop(conn)
            raise
        if len(free) < ASYNC_SPARE:
            free.append(conn)
        else:
            self._drop(conn)
        return reply

    def _drop(self, conn: Any) -> None:
        """Close a connection whose state is unknown (an error or a cancellation mid-exchange)."""
        try:
            task = asyncio.get_running_loop().create_task(conn.disconnect(nowait=True))
        except RuntimeError:  # no running loop: nothing can be awaited; the socket closes with the object
            return
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
