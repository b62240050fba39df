"""Idempotency-Key store, on the real Redis."""

from __future__ import annotations

import json
import threading

import pytest

from cache_app.core import keys
from cache_app.idempotency import (
    IdempotencyConflictError,
    IdempotencyInProgressError,
    IdempotencyStore,
    body_digest,
    check_key,
)

pytestmark = pytest.mark.redis_server


class Work:
    def __init__(self, result=None, error: BaseException | None = None) -> None:
        self.calls = 0
        self.result = {"status": 202, "data": {"wave_id": "w1"}} if result is None else result
        self.error = error

    def __call__(self):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.result


def test_same_key_same_body_returns_the_first_response_without_a_second_piece_of_work(redis):
    store = IdempotencyStore()
    work = Work()
    digest = body_digest({"atoms": [1, 2], "masterplan_id": "x"})
    first = store.run("key-1", digest, work)
    again = store.run("key-1", body_digest({"masterplan_id": "x", "atoms": [1, 2]}), Work({"other": True}))
    assert first.replayed is False
    assert again.replayed is True
    assert again.value == first.value == {"status": 202, "data": {"wave_id": "w1"}}
    assert work.calls == 1
    ttl = redis.ttl(keys.idempotency("", "key-1"))
    assert 86000 < ttl <= 86400  # kept 24 h


def test_same_key_different_body_is_a_conflict_and_does_no_work(redis):
    store = IdempotencyStore()
    store.run("key-2", body_digest({"a": 1}), Work())
    second = Work()
    with pytest.raises(IdempotencyConflictError):
        store.run("key-2", body_digest({"a": 2}), second)
    assert second.calls == 0


def test_scopes_keep_callers_apart(redis):
    store = IdempotencyStore()
    digest = body_digest({})
    store.run("shared", digest, Work({"who": "alice"}), scope="POST llm/waves alice")
    bob = store.run("shared", digest, Work({"who": "bob"}), scope="POST llm/waves bob")
    assert bob.value == {"who": "bob"}
    assert bob.replayed is False


def test_a_failed_first_attempt_releases_the_key(redis):
    store = IdempotencyStore()
    digest = body_digest({"x": 1})
    with pytest.raises(RuntimeError):
        store.run("key-3", digest, Work(error=RuntimeError("provider down")))
    retry = Work({"ok": True})
    assert store.run("key-3", digest, retry).value == {"ok": True}
    assert retry.calls == 1


def test_a_concurrent_duplicate_in_flight_is_refused_then_waits_for_the_first(redis):
    store = IdempotencyStore()
    digest = body_digest({"n": 1})
    inside, release = threading.Event(), threading.Event()
    results: dict = {}

    def slow():
        inside.set()
        assert release.wait(10)
        return {"answer": 42}

    first = threading.Thread(target=lambda: results.setdefault("first", store.run("key-4", digest, slow)))
    first.start()
    assert inside.wait(10)
    duplicate = Work()
    with pytest.raises(IdempotencyInProgressError):
        store.run("key-4", digest, duplicate)  # no wait: 409 at once
    # A duplicate that is willing to wait gets the first response once it is there.
    waiter = threading.Thread(
        target=lambda: results.setdefault("waiter", store.run("key-4", digest, duplicate, wait_seconds=30))
    )
    waiter.start()
    release.set()
    first.join(10)
    waiter.join(10)
    assert results["first"].value == {"answer": 42}
    assert results["waiter"].value == {"answer": 42}
    assert results["waiter"].replayed is True
    assert duplicate.calls == 0


def test_a_waiting_duplicate_gives_up_at_its_bound(redis, clock):
    store = IdempotencyStore(clock=clock, sleep=clock.advance)
    digest = body_digest({})
    in_flight = json.dumps({"state": "in_flight", "digest": digest, "value": None})
    redis.set(keys.idempotency("", "key-5"), "0" * 32 + in_flight)  # another request, still running
    with pytest.raises(IdempotencyInProgressError):
        store.run("key-5", digest, Work(), wait_seconds=2.0)
    assert clock.now >= 1002.0


def test_a_crashed_request_does_not_block_its_key_for_a_day(redis):
    store = IdempotencyStore(lock_seconds=5)
    record = keys.idempotency("", "key-6")
    seen = {}

    def work():
        seen["pttl"] = redis.pttl(record)  # while in flight
        return {"ok": True}

    store.run("key-6", body_digest({}), work)
    assert 0 < seen["pttl"] <= 5000  # the in-flight lease is short ...
    assert redis.ttl(record) > 86000  # ... the stored result lasts 24 h


def test_a_result_that_is_not_json_is_refused_and_releases_the_key(redis):
    store = IdempotencyStore()
    with pytest.raises(TypeError):
        store.run("key-7", body_digest({}), Work(object()))
    assert redis.exists(keys.idempotency("", "key-7")) == 0


@pytest.mark.parametrize("bad", ["", "x" * 256, "tab\tinside", "é", None])
def test_keys_are_bounded_printable_ascii(bad):
    with pytest.raises(ValueError):
        check_key(bad)
