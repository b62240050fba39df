"""The miss -> set handshake of LLMPromptCache on real Redis: what an invalidation refuses, and what it must not.

Each case is driven step by step first, then replayed with real threads sharing one cache
instance, then on the async path. A miss hands its caller a token (the scope tag it saw);
the matching set carries it. Nothing is remembered per key by the instance.
"""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
import redis as redis_lib

from cache_app.llm.cache import LLMPromptCache
from cache_app.llm.client import LLMClient
from cache_app.llm.providers import ProviderRequest, ProviderResponse
from tests.conftest import StaticPolicies

pytestmark = pytest.mark.redis_server

MODEL = "claude-3-5-sonnet"


@pytest.fixture
def cache(redis) -> LLMPromptCache:
    return LLMPromptCache(redis, policies=StaticPolicies())


def put(cache: LLMPromptCache, prompt: str, text: str, mp, **kwargs) -> bool:
    return cache.set(prompt, MODEL, 0, text, prompt_tokens=1, completion_tokens=1, masterplan_id=mp, **kwargs)


async def aput(cache: LLMPromptCache, prompt: str, text: str, mp, **kwargs) -> bool:
    return await cache.aset(prompt, MODEL, 0, text, prompt_tokens=1, completion_tokens=1, masterplan_id=mp, **kwargs)


def text_of(cache: LLMPromptCache, prompt: str, mp) -> str | None:
    hit = cache.get(prompt, MODEL, 0, masterplan_id=mp)
    return None if hit is None else hit.text


# --- 1. two misses of one key in one instance, then an invalidation: neither answer is stored ------


@pytest.mark.parametrize("first", ["A", "B"])
def test_two_misses_then_an_invalidation_store_neither_answer(cache, first):
    mp = uuid.uuid4()
    a = cache.lookup("q", MODEL, 0, masterplan_id=mp)  # thread A misses
    b = cache.lookup("q", MODEL, 0, masterplan_id=mp)  # thread B misses the same key
    assert (a.hit, b.hit) == (None, None)
    assert a.token == b.token  # each miss hands its caller the tag it saw; the instance keeps nothing
    assert (a.token.key, a.token.tag) == (cache.key_for("q", MODEL, 0, masterplan_id=mp), b"e0g0|")
    cache.invalidate_masterplan(mp)
    tokens = {"A": a.token, "B": b.token}
    second = "B" if first == "A" else "A"
    assert put(cache, "q", f"{first}: computed for the dead generation", mp, token=tokens[first]) is False
    assert put(cache, "q", f"{second}: computed for the dead generation", mp, token=tokens[second]) is False
    assert text_of(cache, "q", mp) is None
    # A lookup made after the invalidation hands out a token that writes.
    c = cache.lookup("q", MODEL, 0, masterplan_id=mp)
    assert put(cache, "q", "fresh", mp, token=c.token) is True
    assert text_of(cache, "q", mp) == "fresh"


def test_two_threads_of_one_instance_never_store_an_answer_made_before_an_invalidation(cache):
    mp = uuid.uuid4()
    missed = threading.Barrier(3)
    invalidated = threading.Event()
    results: dict[str, bool] = {}

    def worker(name: str) -> None:
        found = cache.lookup("q", MODEL, 0, masterplan_id=mp)
        missed.wait(timeout=10)
        assert invalidated.wait(timeout=10)
        results[name] = put(cache, "q", f"{name}: stale", mp, token=found.token)

    threads = [threading.Thread(target=worker, args=(name,)) for name in ("A", "B")]
    for t in threads:
        t.start()
    missed.wait(timeout=10)  # both threads missed
    cache.invalidate_masterplan(mp)
    invalidated.set()
    for t in threads:
        t.join(timeout=10)
    assert results == {"A": False, "B": False}
    assert text_of(cache, "q", mp) is None


async def test_two_async_misses_then_an_invalidation_store_neither_answer(cache):
    mp = uuid.uuid4()
    a, b = await asyncio.gather(*(cache.alookup("q", MODEL, 0, masterplan_id=mp) for _ in range(2)))
    await cache.ainvalidate_masterplan(mp)
    stored = await asyncio.gather(aput(cache, "q", "A", mp, token=a.token), aput(cache, "q", "B", mp, token=b.token))
    assert stored == [False, False]
    assert await cache.aget("q", MODEL, 0, masterplan_id=mp) is None
    fresh = await cache.alookup("q", MODEL, 0, masterplan_id=mp)
    assert await aput(cache, "q", "fresh", mp, token=fresh.token) is True
    assert (await cache.aget("q", MODEL, 0, masterplan_id=mp)).text == "fresh"


# --- 3. a fresh answer after an invalidation is stored --------------------------------------------


def test_a_miss_whose_set_never_came_does_not_refuse_a_later_fresh_answer(cache):
    mp = uuid.uuid4()
    cache.lookup("q", MODEL, 0, masterplan_id=mp)  # e.g. the provider failed: no set follows
    assert put(cache, "q", "cut off", mp, finish_reason="length") is False  # a truncated answer is skipped
    cache.invalidate_masterplan(mp)
    fresh = cache.lookup("q", MODEL, 0, masterplan_id=mp)  # computed after the invalidation
    assert put(cache, "q", "fresh", mp, token=fresh.token) is True
    assert text_of(cache, "q", mp) == "fresh"


def test_a_set_without_a_preceding_miss_writes_under_the_current_tag(cache):
    mp = uuid.uuid4()
    assert cache.get("q", MODEL, 0, masterplan_id=mp) is None  # a miss whose set never comes
    cache.invalidate_masterplan(mp)
    stored = put(cache, "q", "warm-up", mp)  # no token: whatever tag is current
    assert text_of(cache, "q", mp) == "warm-up"
    assert stored is True


def test_threads_whose_misses_saw_the_current_generation_all_write(cache):
    mp = uuid.uuid4()
    cache.lookup("q", MODEL, 0, masterplan_id=mp)  # abandoned before the invalidation
    cache.invalidate_masterplan(mp)
    missed = threading.Barrier(4)
    results: list[bool] = []

    def worker(n: int) -> None:
        found = cache.lookup("q", MODEL, 0, masterplan_id=mp)
        missed.wait(timeout=10)
        results.append(put(cache, "q", f"fresh {n}", mp, token=found.token))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == [True] * 4  # no invalidation between any of these misses and sets
    assert text_of(cache, "q", mp).startswith("fresh")


async def test_async_a_miss_whose_set_never_came_does_not_refuse_a_later_fresh_answer(cache):
    mp = uuid.uuid4()
    await cache.alookup("q", MODEL, 0, masterplan_id=mp)
    await cache.ainvalidate_masterplan(mp)
    assert await aput(cache, "q", "no token", mp) is True
    fresh = await cache.alookup("q", MODEL, 0, masterplan_id=mp)
    assert fresh.hit.text == "no token"
    assert fresh.token is None  # a hit hands out no token
    await cache.ainvalidate_masterplan(mp)
    again = await cache.alookup("q", MODEL, 0, masterplan_id=mp)
    assert await aput(cache, "q", "fresh", mp, token=again.token) is True


class FlakyProvider:
    """Fails its first call (a provider error: the miss's set never comes), then answers."""

    name = "flaky"
    simulated = True

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("provider unavailable")
        return ProviderResponse(f"answer {self.calls}", request.model, 3, 2, "stop", self.name)


@pytest.mark.django_db
async def test_the_client_caches_the_first_answer_after_a_failed_call_and_an_invalidation(redis):
    mp = uuid.uuid4()
    provider = FlakyProvider()
    client = LLMClient(provider, prompt_cache=LLMPromptCache(redis, policies=StaticPolicies()))
    with pytest.raises(RuntimeError):
        await client.generate("q", MODEL, 0.0, masterplan_id=mp)
    await client.prompt_cache.ainvalidate_masterplan(mp)
    first = await client.generate("q", MODEL, 0.0, masterplan_id=mp)
    assert (first.cached, first.text) == (False, "answer 2")
    second = await client.generate("q", MODEL, 0.0, masterplan_id=mp)
    assert (second.cached, second.cache_layer, second.text) == (True, "llm", "answer 2")
    assert provider.calls == 2


# --- tokens are checked -------------------------------------------------------------------------------


def test_a_token_of_another_entry_is_rejected(cache):
    token = cache.lookup("q", MODEL, 0).token
    with pytest.raises(ValueError, match="another entry"):
        put(cache, "other", "x", None, token=token)
    with pytest.raises(TypeError, match="WriteToken"):
        put(cache, "q", "x", None, token=b"e0g0|")


def test_redis_down_hands_out_no_token(private_redis):
    client = redis_lib.Redis.from_url(private_redis.url, socket_timeout=0.25, socket_connect_timeout=0.25)
    cache = LLMPromptCache(client, policies=StaticPolicies())
    private_redis.stop()
    found = cache.lookup("q", MODEL, 0)
    assert (found.hit, found.token) == (None, None)  # a later set writes under whatever tag is current
