"""MgecacheLLMCache against LangChain's own standard suites (unmodified), on the real Redis.

Needs the optional extra (requirements-langchain.txt, `make install-langchain`); skipped
without it, except under CI=true, where a missing extra is a failure.
"""

from __future__ import annotations

import os
import uuid

import pytest

if os.environ.get("CI", "").lower() != "true":
    pytest.importorskip("langchain_tests", reason="the optional LangChain extra is not installed")

from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, Generation
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite

from cache_app.core import keys
from cache_app.core.policies import LayerPolicy
from cache_app.integrations.langchain import MgecacheLLMCache
from cache_app.llm.cache import LLMPromptCache

pytestmark = [pytest.mark.redis_server, pytest.mark.django_db]


class TestMgecacheSyncCache(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self) -> MgecacheLLMCache:
        # A fresh masterplan in this test's private key prefix: empty by construction.
        return MgecacheLLMCache(masterplan_id=uuid.uuid4())


class TestMgecacheAsyncCache(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self) -> MgecacheLLMCache:
        return MgecacheLLMCache(masterplan_id=uuid.uuid4())


LLM_STRING = "[('model_name', 'fake'), ('temperature', 0.0)]"


def test_entries_live_in_the_llm_layer_under_the_adapters_masterplan(redis):
    mp = uuid.uuid4()
    MgecacheLLMCache(masterplan_id=mp).update("prompt", LLM_STRING, [Generation(text="answer")])
    assert len(list(redis.scan_iter(match=keys.llm_scope_pattern(mp)))) == 1
    assert list(redis.scan_iter(match=keys.llm_scope_pattern(None))) == []


def test_llm_string_and_scope_are_part_of_the_identity():
    mp = uuid.uuid4()
    cache = MgecacheLLMCache(masterplan_id=mp)
    cache.update("prompt", LLM_STRING, [Generation(text="answer")])
    assert cache.lookup("prompt", LLM_STRING.replace("0.0", "0.5")) is None
    assert MgecacheLLMCache(masterplan_id=uuid.uuid4()).lookup("prompt", LLM_STRING) is None
    assert MgecacheLLMCache().lookup("prompt", LLM_STRING) is None


def test_clear_touches_only_its_own_scope():
    mine, other = MgecacheLLMCache(masterplan_id=uuid.uuid4()), MgecacheLLMCache(masterplan_id=uuid.uuid4())
    global_scope = MgecacheLLMCache()
    for cache in (mine, other, global_scope):
        cache.update("prompt", LLM_STRING, [Generation(text="answer")])
    mine.clear()
    assert mine.lookup("prompt", LLM_STRING) is None
    assert other.lookup("prompt", LLM_STRING) == [Generation(text="answer")]
    assert global_scope.lookup("prompt", LLM_STRING) == [Generation(text="answer")]


async def test_aclear_touches_only_its_own_scope():
    mine, other = MgecacheLLMCache(masterplan_id=uuid.uuid4()), MgecacheLLMCache(masterplan_id=uuid.uuid4())
    for cache in (mine, other):
        await cache.aupdate("prompt", LLM_STRING, [Generation(text="answer")])
    await mine.aclear()
    assert await mine.alookup("prompt", LLM_STRING) is None
    assert await other.alookup("prompt", LLM_STRING) == [Generation(text="answer")]


def test_chat_generations_round_trip_with_their_messages():
    cache = MgecacheLLMCache(masterplan_id=uuid.uuid4())
    generations = [ChatGeneration(message=AIMessage("hi", response_metadata={"model": "m"}))]
    cache.update("prompt", LLM_STRING, generations)
    assert cache.lookup("prompt", LLM_STRING) == generations


def test_an_entry_that_is_not_generations_is_a_miss():
    mp = uuid.uuid4()
    cache = MgecacheLLMCache(masterplan_id=mp)
    # Something else wrote JSON that revives a non-generation object under the same identity.
    cache.prompt_cache.set(
        "prompt",
        "langchain",
        0,
        '{"not": "generations"}',
        prompt_tokens=1,
        completion_tokens=1,
        masterplan_id=mp,
        llm_string=LLM_STRING,
    )
    assert cache.lookup("prompt", LLM_STRING) is None


class DisabledPolicies:
    def llm(self) -> LayerPolicy:
        return LayerPolicy(layer="llm", enabled=False)


def test_the_llm_cache_policy_applies(redis):
    disabled = LLMPromptCache(redis, policies=DisabledPolicies())
    cache = MgecacheLLMCache(masterplan_id=uuid.uuid4(), prompt_cache=disabled)
    cache.update("prompt", LLM_STRING, [Generation(text="answer")])
    assert cache.lookup("prompt", LLM_STRING) is None


def test_set_llm_cache_serves_a_langchain_llm_from_mgecache():
    cache = MgecacheLLMCache(masterplan_id=uuid.uuid4())
    set_llm_cache(cache)
    try:
        first = FakeListLLM(responses=["first answer", "second answer"])
        assert first.invoke("same question") == "first answer"
        # A cached answer: the fake would otherwise have moved on to its second response.
        assert first.invoke("same question") == "first answer"
        assert first.invoke("another question") == "second answer"
    finally:
        set_llm_cache(None)
