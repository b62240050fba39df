"""LLMPromptCache under Redis outages (stopped server, blackholed port, recovery) and across processes.

Outage tests run a private redis-server (or a silent socket) per test and never assert
wall-clock timings: they assert that the breaker is open and that later calls did not
touch the socket. Latency figures are in benchmarks/llm_cache.py.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid

import pytest
import redis as redis_lib
from prometheus_client import REGISTRY

from cache_app.core.redis_client import CircuitBreaker, RedisGuard
from cache_app.llm.cache import CacheUnavailableError, LLMPromptCache
from tests.conftest import StaticPolicies, run_python

MODEL = "claude-3-5-sonnet"


def errors(operation: str) -> float:
    return REGISTRY.get_sample_value("mgecache_cache_errors_total", {"cache_layer": "llm", "operation": operation}) or 0


def short_timeout_client(port: int) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.25, socket_connect_timeout=0.25)


def cache_on(client, clock, reset_seconds: float = 1.0) -> tuple[LLMPromptCache, CircuitBreaker]:
    breaker = CircuitBreaker(
        probe=client.ping, failure_threshold=1, reset_seconds=reset_seconds, clock=clock, name="test-llm"
    )
    guard = RedisGuard(breaker, layer="llm", clock=clock)
    return LLMPromptCache(client, policies=StaticPolicies(), guard=guard), breaker


def count_connections(monkeypatch, client) -> list[int]:
    """Counts every connection checkout of the client's pool (a call that reaches the socket)."""
    calls: list[int] = []
    original = client.connection_pool.get_connection

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(client.connection_pool, "get_connection", counting)
    return calls


def put(cache: LLMPromptCache, prompt: str, **kwargs) -> None:
    cache.set(prompt, MODEL, 0, f"answer to {prompt}", prompt_tokens=1, completion_tokens=1, **kwargs)


def test_stopped_redis_fails_open_and_the_breaker_keeps_calls_off_the_socket(private_redis, clock, monkeypatch, caplog):
    client = short_timeout_client(private_redis.port)
    cache, breaker = cache_on(client, clock, reset_seconds=60)  # its background probe stays off the socket
    mp = uuid.uuid4()
    put(cache, "q", masterplan_id=mp)
    assert cache.get("q", MODEL, 0, masterplan_id=mp).text == "answer to q"

    private_redis.stop()
    get_errors, set_errors = errors("get"), errors("set")
    caplog.set_level(logging.WARNING, logger="cache_app.core.redis_client")
    assert cache.get("q", MODEL, 0, masterplan_id=mp) is None  # the first failure: refused, counted
    assert breaker.is_open

    sockets = count_connections(monkeypatch, client)
    for i in range(100):
        assert cache.get(f"q{i}", MODEL, 0, masterplan_id=mp) is None
        put(cache, f"q{i}", masterplan_id=mp)  # does nothing, raises nothing
    assert sockets == []  # the open breaker answered every call without touching Redis
    assert errors("get") == get_errors + 101
    assert errors("set") == set_errors + 100
    logged = [r for r in caplog.records if "cache llm get" in r.getMessage()]
    assert len(logged) == 1  # rate-limited: one line per operation per interval
    with pytest.raises(CacheUnavailableError):
        cache.invalidate_masterplan(mp)  # an invalidation must not pretend it happened


def test_blackholed_port_fails_open_after_one_socket_timeout_and_a_failed_ping(blackhole_port, clock, monkeypatch):
    client = short_timeout_client(blackhole_port)
    cache, breaker = cache_on(client, clock, reset_seconds=60)  # its background probe stays off the socket
    get_errors = errors("get")
    assert cache.get("q", MODEL, 0) is None  # accepted, never answered: one socket timeout
    assert breaker.wait_verified(5)  # the breaker's own ping times out too
    assert breaker.is_open
    sockets = count_connections(monkeypatch, client)
    for i in range(100):
        assert cache.get(f"q{i}", MODEL, 0) is None
        put(cache, f"q{i}")
    assert sockets == []
    assert errors("get") == get_errors + 101
    assert cache.hit_rate() == 0.0  # the durable counters live elsewhere and still answer


async def test_async_twins_fail_open_on_a_blackholed_port(blackhole_port, clock):
    sync_client = short_timeout_client(blackhole_port)
    breaker = CircuitBreaker(probe=sync_client.ping, failure_threshold=1, reset_seconds=1.0, clock=clock)
    cache = LLMPromptCache(sync_client, policies=StaticPolicies(), breaker=breaker)
    async_client = cache.async_client()  # derived from the injected sync client, same timeouts
    calls: list[str] = []
    original = async_client.execute_command

    async def counting(*args, **kwargs):
        calls.append(args[0])
        return await original(*args, **kwargs)

    async_client.execute_command = counting
    lean_mget = cache._amget  # the hit path's MGET bypasses execute_command (wire.py): count it too

    async def counting_mget(client, keys):
        calls.append("MGET")
        return await lean_mget(client, keys)

    cache._amget = counting_mget
    get_errors = errors("get")
    assert await cache.aget("q", MODEL, 0) is None
    assert breaker.wait_verified(5)  # the breaker's own ping (the sync client's) times out too
    assert breaker.is_open
    assert calls == ["MGET"]
    for i in range(50):
        assert await cache.aget(f"q{i}", MODEL, 0) is None
        await cache.aset(f"q{i}", MODEL, 0, "x", prompt_tokens=1, completion_tokens=1)
    assert calls == ["MGET"]  # nothing else reached the socket
    assert errors("get") == get_errors + 51
    with pytest.raises(CacheUnavailableError):
        await cache.ainvalidate_masterplan(uuid.uuid4())
    await async_client.aclose()


def test_caching_resumes_on_its_own_when_redis_returns(private_redis, clock):
    client = short_timeout_client(private_redis.port)
    cache, breaker = cache_on(client, clock)
    put(cache, "before")
    private_redis.stop()
    assert cache.get("before", MODEL, 0) is None
    assert breaker.is_open

    private_redis.start()  # same port, empty dataset; no call is needed from here on
    assert breaker.wait_closed(timeout=10)  # the background probe (every reset_seconds) found Redis again
    assert not breaker.is_open
    assert cache.get("before", MODEL, 0) is None  # the restart lost it
    put(cache, "after")
    assert cache.get("after", MODEL, 0).text == "answer to after"


def test_stopping_redis_in_the_middle_of_a_run_raises_nothing(private_redis):
    client = short_timeout_client(private_redis.port)
    cache = LLMPromptCache(client, policies=StaticPolicies())  # real clock, private breaker
    failures: list[BaseException] = []
    served = {"hits": 0, "calls": 0}
    stop = threading.Event()
    running = threading.Event()
    kept_going = threading.Event()
    target = {"calls": None}  # set once Redis is stopped

    def workload() -> None:
        i = 0
        while not stop.is_set():
            try:
                prompt = f"p{i % 50}"
                if cache.get(prompt, MODEL, 0) is None:
                    put(cache, prompt)
                else:
                    served["hits"] += 1
                served["calls"] += 1
            except BaseException as exc:  # the assertion below reports it
                failures.append(exc)
            if served["calls"] >= 200:
                running.set()
            if target["calls"] is not None and served["calls"] >= target["calls"]:
                kept_going.set()
            i += 1

    threads = [threading.Thread(target=workload) for _ in range(3)]
    for t in threads:
        t.start()
    assert running.wait(timeout=30)
    private_redis.stop()
    calls_at_stop = served["calls"]
    target["calls"] = calls_at_stop + 300
    kept_going.wait(timeout=10)  # the workload signals when it has made 300 more calls
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert failures == []
    assert served["calls"] >= calls_at_stop + 300  # the workload kept going after the stop
    assert served["hits"] > 0


CHILD_COUNTS = """
from cache_app.core.counters import get_counters
from cache_app.llm.cache import LLMPromptCache
c = LLMPromptCache()
for i in range({n}):
    prompt = "{name}-%d" % i
    assert c.get(prompt, "m", 0) is None
    c.set(prompt, "m", 0, "answer", prompt_tokens=1, completion_tokens=1)
    for _ in range({hits_each}):
        assert c.get(prompt, "m", 0).text == "answer"
assert get_counters().flush()
"""

CHILD_READS = """
import json
from cache_app.llm.cache import LLMPromptCache
c = LLMPromptCache()
print(json.dumps({"stats": c.stats(), "hit_rate": c.hit_rate()}))
"""


@pytest.mark.redis_server
@pytest.mark.django_db(transaction=True)
def test_two_processes_count_and_a_third_reads_the_sum(subprocess_env):
    outcomes: list[BaseException] = []

    def child(code: str) -> None:
        try:
            run_python(code, subprocess_env)
        except BaseException as exc:
            outcomes.append(exc)

    children = [
        threading.Thread(target=child, args=(CHILD_COUNTS.format(name="a", n=6, hits_each=2),)),
        threading.Thread(target=child, args=(CHILD_COUNTS.format(name="b", n=4, hits_each=1),)),
    ]
    for t in children:
        t.start()
    for t in children:
        t.join(timeout=120)
    assert outcomes == []
    report = json.loads(run_python(CHILD_READS, subprocess_env).stdout.strip().splitlines()[-1])
    assert report["stats"]["misses"] == 10
    assert report["stats"]["writes"] == 10
    assert report["stats"]["hits"] == 6 * 2 + 4 * 1
    assert report["hit_rate"] == pytest.approx(16 / 26)
