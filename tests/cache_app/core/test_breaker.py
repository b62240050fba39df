"""The circuit breaker's background probe: it runs while the breaker is open, with no caller needed.

A process that sat idle while Redis recovered must find the breaker closed: its next
lookup hits and its next invalidation succeeds. The probe is one thread per open breaker,
and it ends when the breaker closes or is dropped. Tests wait on events, never on time.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid

import pytest
import redis as redis_lib

from cache_app.core.redis_client import CircuitBreaker
from cache_app.llm.cache import LLMPromptCache
from cache_app.rag.cache import RAGIndex, RAGQueryCache
from tests.conftest import StaticPolicies

MODEL = "claude-3-5-sonnet"


def probe_threads(breaker: CircuitBreaker) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"mgecache-{breaker.name}-probe"]


def short_timeout_client(port: int) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.25, socket_connect_timeout=0.25)


class SwitchableProbe:
    """A probe that fails until ``up`` is set, and counts its calls."""

    def __init__(self) -> None:
        self.up = threading.Event()
        self.calls = 0
        self.called = threading.Event()

    def __call__(self) -> None:
        self.calls += 1
        self.called.set()
        if not self.up.is_set():
            raise redis_lib.ConnectionError("down")


def test_an_idle_process_finds_the_breaker_closed_and_can_invalidate(private_redis):
    client = short_timeout_client(private_redis.port)
    breaker = CircuitBreaker(probe=client.ping, failure_threshold=1, reset_seconds=0.2, name=f"idle-{uuid.uuid4()}")
    llm = LLMPromptCache(client, policies=StaticPolicies(), breaker=breaker)
    rag = RAGQueryCache(client, policies=StaticPolicies(), breaker=breaker, index=RAGIndex())
    mp = uuid.uuid4()
    private_redis.stop()
    assert llm.get("q", MODEL, 0, masterplan_id=mp) is None  # the failure that opens the breaker
    assert breaker.is_open
    private_redis.start()  # ...and then no call at all while Redis recovers
    assert breaker.wait_closed(timeout=10)  # the background probe closed it by itself
    assert llm.invalidate_masterplan(mp) == 0  # no CacheUnavailableError
    assert rag.invalidate_masterplan(mp) == 0
    llm.set("q", MODEL, 0, "after", prompt_tokens=1, completion_tokens=1, masterplan_id=mp)
    assert llm.get("q", MODEL, 0, masterplan_id=mp).text == "after"  # the next lookup hits


async def test_an_idle_async_process_finds_the_breaker_closed_and_can_invalidate(private_redis):
    client = short_timeout_client(private_redis.port)
    breaker = CircuitBreaker(probe=client.ping, failure_threshold=1, reset_seconds=0.2, name=f"idle-{uuid.uuid4()}")
    llm = LLMPromptCache(client, policies=StaticPolicies(), breaker=breaker)
    mp = uuid.uuid4()
    private_redis.stop()
    assert await llm.aget("q", MODEL, 0, masterplan_id=mp) is None
    assert breaker.is_open
    private_redis.start()
    assert breaker.wait_closed(timeout=10)
    assert await llm.ainvalidate_masterplan(mp) == 0
    await llm.aset("q", MODEL, 0, "after", prompt_tokens=1, completion_tokens=1, masterplan_id=mp)
    assert (await llm.aget("q", MODEL, 0, masterplan_id=mp)).text == "after"
    await llm.async_client().aclose()


def test_one_probe_thread_per_open_breaker_and_it_ends_when_the_breaker_closes():
    probe = SwitchableProbe()
    breaker = CircuitBreaker(probe=probe, failure_threshold=2, reset_seconds=0.01, name=f"one-{uuid.uuid4()}")
    breaker.record_failure()
    assert not breaker.is_open
    assert probe_threads(breaker) == []  # closed: no probe
    breaker.record_failure()
    assert breaker.is_open
    assert probe.called.wait(timeout=10)  # probing with no caller at all
    for _ in range(1000):
        assert breaker.allow() is False  # callers skip Redis and never start a second probe
        breaker.record_failure()
    assert len(probe_threads(breaker)) == 1
    probe.up.set()
    assert breaker.wait_closed(timeout=10)
    for thread in probe_threads(breaker):
        thread.join(timeout=10)
    assert probe_threads(breaker) == []
    assert breaker.allow() is True
    assert not breaker.is_open


def test_a_dropped_breaker_ends_its_probe():
    probe = SwitchableProbe()
    breaker = CircuitBreaker(probe=probe, failure_threshold=1, reset_seconds=0.01, name=f"dropped-{uuid.uuid4()}")
    breaker.record_failure()
    assert probe.called.wait(timeout=10)
    (thread,) = probe_threads(breaker)
    del breaker
    gc.collect()
    thread.join(timeout=10)
    assert not thread.is_alive()  # Redis never came back, but nobody holds the breaker any more


def test_a_breaker_that_reopens_is_probed_again():
    probe = SwitchableProbe()
    breaker = CircuitBreaker(probe=probe, failure_threshold=1, reset_seconds=0.01, name=f"again-{uuid.uuid4()}")
    for _ in range(2):
        probe.up.clear()
        breaker.record_failure()
        assert breaker.is_open
        probe.up.set()
        assert breaker.wait_closed(timeout=10)
    assert probe.calls >= 2


def test_an_outage_is_measured_from_opening_to_closing_whatever_the_failed_probes():
    from prometheus_client import REGISTRY

    def sample(suffix: str) -> float:
        return REGISTRY.get_sample_value(f"mgecache_redis_outage_seconds_{suffix}", {"client": "outage-test"}) or 0.0

    now = [100.0]
    breaker = CircuitBreaker(
        probe=None, failure_threshold=1, reset_seconds=3600, clock=lambda: now[0], name="outage-test"
    )
    count, total = sample("count"), sample("sum")
    breaker.record_failure()  # opens
    now[0] += 2.0
    breaker.record_failure()  # a failed probe restarts the wait, not the outage
    now[0] += 1.5
    breaker.record_success()  # closes
    assert sample("count") == count + 1
    assert sample("sum") == pytest.approx(total + 3.5)
    breaker.record_success()  # already closed: no new outage
    assert sample("count") == count + 1


# --- a timeout opens the breaker only when the breaker's own ping fails too ---------------------


def verified(name: str, result: str) -> float:
    from prometheus_client import REGISTRY

    sample = REGISTRY.get_sample_value("mgecache_redis_timeouts_verified_total", {"client": name, "result": result})
    return sample or 0.0


def test_a_timeout_opens_the_breaker_only_if_the_breakers_ping_fails_too():
    probe, name = SwitchableProbe(), f"verify-{uuid.uuid4()}"
    probe.up.set()
    breaker = CircuitBreaker(probe=probe, failure_threshold=1, reset_seconds=3600, name=name)
    breaker.record_failure(redis_lib.TimeoutError("Timeout reading from socket"))
    assert breaker.wait_verified(5)
    assert not breaker.is_open  # Redis answered the ping: this process was slow, not Redis
    assert (probe.calls, verified(name, "answered")) == (1, 1)
    probe.up.clear()
    breaker.record_failure(TimeoutError())  # asyncio's timeout, as the async client raises it
    assert breaker.wait_verified(5)
    assert breaker.is_open
    assert verified(name, "failed") == 1


def test_a_refused_connection_opens_the_breaker_at_once_without_a_ping():
    probe = SwitchableProbe()
    breaker = CircuitBreaker(probe=probe, failure_threshold=1, reset_seconds=3600, name=f"refused-{uuid.uuid4()}")
    breaker.record_failure(redis_lib.ConnectionError("Connection refused"))
    assert breaker.is_open
    assert breaker._verifier is None


def test_one_ping_decides_for_a_burst_of_timeouts():
    release, started, calls = threading.Event(), threading.Event(), []

    def slow_ping() -> None:
        calls.append(1)
        started.set()
        assert release.wait(10)

    breaker = CircuitBreaker(probe=slow_ping, failure_threshold=1, reset_seconds=3600, name=f"burst-{uuid.uuid4()}")
    breaker.record_failure(TimeoutError())
    assert started.wait(10)
    for _ in range(20):  # a stalled loop times out every read it had in flight at once
        breaker.record_failure(TimeoutError())
    release.set()
    assert breaker.wait_verified(10)
    assert calls == [1]
    assert not breaker.is_open


async def test_a_read_timed_out_by_a_stalled_event_loop_leaves_the_breaker_closed(private_redis, monkeypatch):
    """The load test's failure: Redis answered at once, but the loop ran the read's timeout first.

    The loop's clock jumps past the read timeout (0.25 s) between sending a lookup and reading
    its answer, as when a web worker short of CPU holds the loop's thread that long. asyncio then
    runs the due timeout before the task the answer woke, so this one lookup fails open; the
    breaker must stay closed, so the next lookup hits.
    """
    client = short_timeout_client(private_redis.port)
    name = f"stall-{uuid.uuid4()}"
    breaker = CircuitBreaker(probe=client.ping, failure_threshold=1, reset_seconds=3600, name=name)
    llm = LLMPromptCache(client, policies=StaticPolicies(), breaker=breaker)
    await llm.aset("q", MODEL, 0, "answer", prompt_tokens=1, completion_tokens=1)
    assert (await llm.aget("q", MODEL, 0)).text == "answer"  # connected
    loop = asyncio.get_running_loop()
    selector = loop._selector  # type: ignore[attr-defined]
    real_time, stalled_for = loop.time, [0.0]
    monkeypatch.setattr(loop, "time", lambda: real_time() + stalled_for[0])
    real_select, real_send = selector.select, redis_lib.asyncio.Connection.send_packed_command
    sent = threading.Event()

    async def send_then_stall(self, *args, **kwargs):
        # Written in place: with a socket timeout redis-py sends through a wait_for task, and the loop
        # turn that runs it could read the answer before the lookup waits for it (no timeout then).
        timeout, self.socket_timeout = self.socket_timeout, None
        try:
            await real_send(self, *args, **kwargs)
        finally:
            self.socket_timeout = timeout  # the read's timeout
        sent.set()  # the lookup is sent; its read (and the read's timeout) starts before the loop selects again

    def stalled_select(timeout=None):
        if sent.is_set():
            selector.select = real_select  # once
            stalled_for[0] = 0.4  # the stall itself: the loop's clock passes the read timeout
        return real_select(timeout)

    monkeypatch.setattr(redis_lib.asyncio.Connection, "send_packed_command", send_then_stall)
    selector.select = stalled_select
    assert await llm.aget("q", MODEL, 0) is None  # timed out with its answer waiting: failed open
    selector.select = real_select
    monkeypatch.undo()
    assert breaker.wait_verified(5)
    assert not breaker.is_open
    assert verified(name, "answered") == 1
    assert (await llm.aget("q", MODEL, 0)).text == "answer"  # the next lookup hits
    await llm.async_client().aclose()
