"""Process-wide state: one getter idiom, one reset."""

from __future__ import annotations

import threading

import pytest

from cache_app.core.counters import get_counters
from cache_app.core.policies import get_policy_source
from cache_app.core.redis_client import get_breaker
from cache_app.core.state import process_wide, reset_process_state
from cache_app.llm.client import get_llm_client
from cache_app.llm.pricing import get_ledger, get_price_table
from cache_app.llm.providers import get_provider
from cache_app.rag.cache import get_rag_index
from cache_app.rag.documents import get_document_store
from cache_app.rag.engine import get_rag_engine
from tests.conftest import StaticPolicies

GETTERS = [
    get_policy_source,
    get_breaker,
    get_counters,
    get_price_table,
    get_ledger,
    get_provider,
    get_document_store,
    get_rag_index,
    get_rag_engine,
    get_llm_client,
]


@pytest.mark.parametrize("getter", GETTERS, ids=lambda g: g.__name__)
def test_every_process_wide_object_is_shared_until_reset(getter):
    first = getter()
    assert getter() is first
    reset_process_state()
    assert getter() is not first


def test_concurrent_first_calls_build_one_object():
    built = []
    entered = threading.Barrier(8)

    @process_wide
    def get_thing() -> object:
        built.append(object())
        return built[-1]

    seen = []

    def call() -> None:
        entered.wait()
        seen.append(get_thing())

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1
    assert all(thing is built[0] for thing in seen)


def test_set_injects_an_object_until_the_next_reset():
    fake = StaticPolicies(ttl_seconds=7)
    get_policy_source.set(fake)
    assert get_policy_source() is fake
    reset_process_state()
    assert get_policy_source() is not fake


def test_a_getter_keeps_its_name_and_docstring():
    assert get_counters.__name__ == "get_counters"
    assert get_counters.__doc__
