"""Cross-process single-flight: a dead or stuck leader never deadlocks its waiters."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from cache_app.core import keys
from cache_app.core.redis_client import get_async_redis
from cache_app.llm.singleflight import LeaderFailedError, SingleFlight

KEY = "request-identity"


def _waiters() -> float:
    return REGISTRY.get_sample_value("mgecache_singleflight_waiters_total", {"scope": "redis"}) or 0.0


def _flight(**kwargs) -> SingleFlight:
    return SingleFlight(encode=lambda v: v, decode=lambda v: v, **kwargs)


async def _until_waiting(before: float) -> None:
    while _waiters() <= before:  # the waiter found the other process's lock and is polling
        await asyncio.sleep(0)


@pytest.fixture
def calls():
    made: list[str] = []

    async def work() -> str:
        made.append("call")
        return "fresh answer"

    work.made = made
    return work


async def test_a_dead_leader_costs_one_extra_call_not_a_deadlock(redis, calls):
    client = get_async_redis()
    lock = keys.singleflight_lock(KEY)
    await client.set(lock, "deadleader", px=60_000)  # another process took the lock, then died
    before = _waiters()
    waiter = asyncio.create_task(_flight().run(KEY, calls))
    await _until_waiting(before)
    assert calls.made == []  # it waits while the lock is held
    await client.delete(lock)  # the dead leader's lock expires
    assert await waiter == "fresh answer"
    assert calls.made == ["call"]  # exactly one extra call


async def test_the_leaders_outcome_answers_waiters_in_other_processes(redis, calls):
    client = get_async_redis()
    lock = keys.singleflight_lock(KEY)
    await client.set(lock, "otherleader", px=60_000)
    before = _waiters()
    waiter = asyncio.create_task(_flight().run(KEY, calls))
    await _until_waiting(before)
    # The other process's leader publishes its answer, then releases its lock.
    await client.set(keys.singleflight_outcome(KEY, "otherleader"), '{"ok": true, "value": "shared answer"}')
    await client.delete(lock)
    assert await waiter == "shared answer"
    assert calls.made == []


async def test_the_leaders_failure_reaches_waiters_in_other_processes(redis, calls):
    client = get_async_redis()
    lock = keys.singleflight_lock(KEY)
    await client.set(lock, "otherleader", px=60_000)
    before = _waiters()
    waiter = asyncio.create_task(_flight().run(KEY, calls))
    await _until_waiting(before)
    await client.set(keys.singleflight_outcome(KEY, "otherleader"), '{"ok": false, "error": "RateLimitError: 429"}')
    with pytest.raises(LeaderFailedError, match="429"):
        await waiter
    assert calls.made == []


async def test_a_stuck_leader_is_abandoned_after_the_bounded_wait(redis, calls, clock):
    client = get_async_redis()
    await client.set(keys.singleflight_lock(KEY), "stuckleader", px=60_000)
    before = _waiters()
    waiter = asyncio.create_task(_flight(max_wait=5.0, clock=clock).run(KEY, calls))
    await _until_waiting(before)
    clock.advance(5.0)  # the bounded wait is over; the leader still holds its lock
    assert await waiter == "fresh answer"
    assert calls.made == ["call"]


async def test_the_leader_publishes_and_releases(redis, calls):
    assert await _flight().run(KEY, calls) == "fresh answer"
    client = get_async_redis()
    assert await client.exists(keys.singleflight_lock(KEY)) == 0  # released for the next request
