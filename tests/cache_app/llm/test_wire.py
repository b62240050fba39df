"""The hit path's lean MGET (llm/cache/wire.py): same replies as redis-py, private connections, errors raised.

Needs a real Redis (CI has one): the lean path is only taken on a plain connection pool.
"""

from __future__ import annotations

import asyncio
import os
import threading

import fakeredis
import pytest
import redis as redis_lib
import redis.asyncio as redis_asyncio

from cache_app.llm.cache import wire

URL = os.environ.get("REDIS_URL")
needs_redis = pytest.mark.skipif(not URL, reason="needs a real Redis (REDIS_URL)")


@pytest.fixture
def keys(key_prefix, redis) -> tuple[str, str, str]:
    names = (f"{key_prefix}:wire:a", f"{key_prefix}:wire:b", f"{key_prefix}:wire:missing")
    redis.set(names[0], b"e1g0|\x00\xffvalue")
    redis.set(names[1], b"2")
    return names


@needs_redis
def test_sync_mget_answers_like_redis_py_on_a_private_connection_per_thread(keys):
    client = redis_lib.Redis.from_url(URL)
    mget = wire.SyncMget(client)
    assert mget.lean
    assert mget(keys) == client.execute_command("MGET", *keys) == [b"e1g0|\x00\xffvalue", b"2", None]
    seen: list[object] = []

    def other_thread() -> None:
        mget(keys)
        seen.append(mget._local.conn)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen[0] is not mget._local.conn  # one connection per thread, none borrowed from the pool
    assert client.connection_pool._in_use_connections == set()
    mget.close()
    assert mget(keys)[1] == b"2"  # reconnects after close


@needs_redis
def test_sync_mget_raises_and_drops_the_connection_on_errors(blackhole_port, keys):
    mget = wire.SyncMget(redis_lib.Redis.from_url(f"redis://127.0.0.1:{blackhole_port}/0", socket_timeout=0.05))
    with pytest.raises(redis_lib.TimeoutError):
        mget(keys)
    assert mget._local.conn._sock is None


def test_clients_that_are_not_plain_go_through_execute_command(keys):
    fake = fakeredis.FakeRedis()
    fake.set(keys[1], b"2")
    mget = wire.SyncMget(fake)
    assert not mget.lean
    assert mget(keys)[1] == b"2"
    assert not wire.SyncMget(redis_lib.Redis.from_url("redis://127.0.0.1:1/0", decode_responses=True)).lean


@needs_redis
async def test_async_mget_reuses_its_connections_and_bounds_the_idle_ones(keys, monkeypatch):
    monkeypatch.setattr(wire, "ASYNC_SPARE", 3)
    client = redis_asyncio.Redis.from_url(URL)
    mget = wire.AsyncMget()
    assert await mget(client, keys) == await client.execute_command("MGET", *keys)
    assert len(mget._free[client]) == 1
    await mget(client, keys)
    assert len(mget._free[client]) == 1  # sequential lookups share one connection
    replies = await asyncio.gather(*(mget(client, keys) for _ in range(8)))
    assert all(reply[1] == b"2" for reply in replies)
    assert len(mget._free[client]) == 3  # in flight at once: more connections; idle beyond the spare: closed
    if mget._closing:
        await asyncio.wait(set(mget._closing))
    await client.aclose()


@needs_redis
async def test_async_mget_raises_and_does_not_keep_a_broken_connection(blackhole_port, keys):
    client = redis_asyncio.Redis.from_url(f"redis://127.0.0.1:{blackhole_port}/0", socket_timeout=0.05)
    mget = wire.AsyncMget()
    with pytest.raises(redis_lib.TimeoutError):
        await mget(client, keys)
    assert mget._free[client] == []
    closing = set(mget._closing)
    assert len(closing) == 1  # the broken connection is being closed, not kept
    await asyncio.wait(closing)
    assert not mget._closing
    await client.aclose()


@needs_redis
def test_sync_mget_replaces_a_connection_the_server_closed_while_idle(redis, keys):
    mget = wire.SyncMget(redis_lib.Redis.from_url(URL))
    mget(keys)
    conn = mget._local.conn
    conn.send_command("CLIENT", "ID")
    redis.client_kill_filter(_id=conn.read_response())  # only this connection (the server is shared)
    assert mget(keys)[1] == b"2"  # no error: a fresh socket answered


@needs_redis
async def test_async_mget_replaces_a_connection_the_server_closed_while_idle(redis, keys):
    client = redis_asyncio.Redis.from_url(URL)
    mget = wire.AsyncMget()
    await mget(client, keys)
    (conn,) = mget._free[client]
    await conn.send_command("CLIENT", "ID")
    redis.client_kill_filter(_id=await conn.read_response())
    assert (await mget(client, keys))[1] == b"2"
    assert mget._free[client] != [conn]  # the closed one was dropped
    if mget._closing:
        await asyncio.wait(set(mget._closing))
    await client.aclose()
