import logging

import redis as redis_lib

from cache_app.core.lograte import LogInterval
from cache_app.core.redis_client import CircuitBreaker, RedisGuard


def test_a_line_is_due_at_most_once_per_interval(clock):
    log = LogInterval(60.0, clock=clock)
    assert log.due()
    assert not log.due()
    clock.advance(59.9)
    assert not log.due()
    clock.advance(0.1)
    assert log.due()
    assert not log.due()


def test_an_interval_given_as_a_callable_is_read_at_each_call(clock):
    seconds = [60.0]
    log = LogInterval(lambda: seconds[0], clock=clock)
    assert log.due()
    clock.advance(5.0)
    assert not log.due()
    seconds[0] = 5.0  # a setting lowered while running
    assert log.due()


def test_the_guard_logs_each_operation_once_per_interval_and_counts_every_failure(clock, caplog, settings):
    settings.MGECACHE = {**settings.MGECACHE, "ERROR_LOG_INTERVAL_SECONDS": 5.0}
    breaker = CircuitBreaker(failure_threshold=1000, clock=clock, name="test-lograte")
    guard = RedisGuard(breaker, layer="llm", clock=clock)

    def broken() -> None:
        raise redis_lib.ConnectionError("down")

    caplog.set_level(logging.WARNING, logger="cache_app.core.redis_client")
    for _ in range(3):
        assert guard.run("get", broken, "default") == "default"
    assert guard.run("set", broken, "default") == "default"
    lines = [r.getMessage() for r in caplog.records if "failed open" in r.getMessage()]
    assert [line.split()[2] for line in lines] == ["get", "set"]  # one line per operation
    clock.advance(5.0)
    guard.run("get", broken, None)
    lines = [r.getMessage() for r in caplog.records if "failed open" in r.getMessage()]
    assert [line.split()[2] for line in lines] == ["get", "set", "get"]
