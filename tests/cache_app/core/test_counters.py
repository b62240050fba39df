import threading
import uuid

import pytest
import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from cache_app.core import keys
from cache_app.core.counters import DurableCounters
from cache_app.core.redis_client import CircuitBreaker, RedisGuard

MP = uuid.UUID("66666666-6666-4666-8666-666666666666")


def test_increments_are_buffered_until_the_flush_interval(redis, clock):
    counters = DurableCounters(redis, flush_seconds=0.5, clock=clock)
    counters.incr("llm", "hits")
    counters.incr("llm", "hits", 2, masterplan_id=MP)
    assert redis.hgetall(keys.stats("llm")) == {}  # nothing written yet: no round trip per count
    clock.advance(0.5)
    counters.incr("llm", "misses")  # the next count after the interval flushes everything
    assert redis.hgetall(keys.stats("llm")) == {b"hits": b"3", b"misses": b"1"}
    assert redis.hgetall(keys.stats("llm", MP)) == {b"hits": b"2"}


def test_read_sums_processes_through_redis(redis, clock):
    a = DurableCounters(redis, flush_seconds=60, clock=clock)
    b = DurableCounters(redis, flush_seconds=60, clock=clock)
    a.incr("rag", "hits", masterplan_id=str(MP))
    b.incr("rag", "misses", masterplan_id=MP)
    b.flush()
    assert a.read("rag") == {"hits": 1.0, "misses": 1.0}  # a's own unflushed delta is flushed first
    assert b.read("rag", masterplan_id=MP) == {"hits": 1.0, "misses": 1.0}
    assert a.hit_rate("rag") == pytest.approx(0.5)


class Switchable:
    """A Redis client whose server the test can swap (down, then up again)."""

    def __init__(self, target) -> None:
        self.target = target

    def __getattr__(self, name: str):
        return getattr(self.target, name)


def test_a_failed_flush_keeps_the_deltas_and_reads_still_count_them(redis, clock, blackhole_port):
    # No client-side retries (redis-py's default backs off for seconds): one timeout per call.
    dead = redis_lib.Redis(
        host="127.0.0.1",
        port=blackhole_port,
        socket_timeout=0.05,
        socket_connect_timeout=0.05,
        retry=Retry(NoBackoff(), 0),
    )
    server = Switchable(dead)
    breaker = CircuitBreaker(name="t", failure_threshold=100)  # stays closed: this test is about the buffer
    counters = DurableCounters(server, guard=RedisGuard(breaker, layer="stats"), clock=clock)
    counters.incr("llm", "hits", 5)
    assert counters.flush() is False
    assert counters.read("llm") == {"hits": 5.0}  # Redis is down, the local deltas still count
    server.target = redis  # Redis is back
    assert counters.flush() is True
    assert redis.hgetall(keys.stats("llm")) == {b"hits": b"5"}


def test_an_invalid_masterplan_id_is_dropped_not_fatal(redis, clock):
    counters = DurableCounters(redis, flush_seconds=60, clock=clock)
    counters.incr("llm", "hits", masterplan_id="not-a-uuid")
    assert counters.flush() is True
    assert redis.hgetall(keys.stats("llm")) == {b"hits": b"1"}


def test_an_idle_process_publishes_its_last_counts_without_another_call(redis):
    counters = DurableCounters(redis, flush_seconds=0.05, background=True)
    counters.incr("llm", "hits", 2, masterplan_id=MP)
    # No other call, no read: the background flusher writes them one interval later, then ends
    # (it ends only once nothing is left to write).
    flusher = counters._flusher
    flusher.join(timeout=10)
    assert not flusher.is_alive()
    assert counters._flusher is None
    assert redis.hgetall(keys.stats("llm", MP)) == {b"hits": b"2"}
    # The next count starts another.
    counters.incr("llm", "hits")
    counters._flusher.join(timeout=10)
    assert redis.hgetall(keys.stats("llm")) == {b"hits": b"3"}


def test_counters_built_for_one_purpose_start_no_thread(redis, clock):
    counters = DurableCounters(redis, flush_seconds=60, clock=clock)
    counters.incr("llm", "hits")
    assert counters._flusher is None
    assert redis.hgetall(keys.stats("llm")) == {}


class HeldPipelines:
    """The real client, except that the first pipeline's ``execute`` waits until ``release`` (or 1 s)."""

    def __init__(self, target) -> None:
        self.target = target
        self.writing = threading.Event()
        self.release = threading.Event()
        self.held = False

    def pipeline(self, *args, **kwargs):
        pipe = self.target.pipeline(*args, **kwargs)
        if self.held:
            return pipe
        self.held = True
        execute = pipe.execute

        def held_execute(*a, **kw):
            self.writing.set()
            self.release.wait(1.0)  # breaks the deadlock a correct flush makes: it waits for this one
            return execute(*a, **kw)

        pipe.execute = held_execute
        return pipe

    def __getattr__(self, name):
        return getattr(self.target, name)


def test_a_flush_returns_only_once_a_flush_already_writing_has_landed(redis, clock):
    """The background flusher may have taken the deltas and still be writing them: a flush that
    found nothing pending must wait for that write, or its caller reads statistics without them."""
    held = HeldPipelines(redis)
    counters = DurableCounters(held, flush_seconds=60, clock=clock)
    counters.incr("cost", "provider_calls", masterplan_id=MP)
    background = threading.Thread(target=counters.flush)  # as the flusher thread would
    background.start()
    assert held.writing.wait(10)
    seen: list[dict] = []

    def flush_then_read() -> None:
        assert counters.flush()
        seen.append(redis.hgetall(keys.stats("cost", MP)))
        held.release.set()

    caller = threading.Thread(target=flush_then_read)
    caller.start()
    caller.join(10)
    background.join(10)
    assert seen == [{b"provider_calls": b"1"}]


def test_a_count_does_not_wait_for_another_threads_flush(redis, clock):
    held = HeldPipelines(redis)
    counters = DurableCounters(held, flush_seconds=0.5, clock=clock)
    counters.incr("llm", "hits")
    background = threading.Thread(target=counters.flush)
    background.start()
    assert held.writing.wait(10)
    clock.advance(1.0)
    counters.incr("llm", "hits")  # due for a flush, but one is writing: it returns at once
    assert background.is_alive()  # the write is still held (for up to 1 s): this count did not wait for it
    held.release.set()
    background.join(10)
    assert counters.read("llm") == {"hits": 2.0}
