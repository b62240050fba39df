"""The batching counters are written where batches are formed, and the statistics report them."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from batching_app.batcher import RequestBatcher, StaticBatchPolicy
from cache_app.core.counters import get_counters
from cache_app.core.policies import BatchSettings
from cache_app.llm.client import LLMClient
from cache_app.statistics import cache_statistics, layer_statistics
from tests.batching_app.fakes import FakeLLM, ManualClock, settle

MP = uuid.UUID("44444444-4444-4444-8444-444444444444")
ORIGINAL_SHAPE = {
    "llm_cache": {"hit_rate": float, "total_hits": int, "total_misses": int, "cost_savings_usd": float},
    "rag_cache": {"hit_rate": float, "total_hits": int, "total_misses": int},
    "combined_hit_rate": float,
    "batching": {"avg_batch_size": float, "total_requests_batched": int},
}


async def test_in_process_batches_are_counted_as_the_provider_received_them(redis):
    clock, llm = ManualClock(), FakeLLM()
    batcher = RequestBatcher(
        llm,
        clock=clock,
        sleep=clock.sleep,
        policies=StaticBatchPolicy(BatchSettings(True, 5, 500)),
        masterplan_id=MP,
    )
    prompts = ["step 0", "step 0", "step 1", "step 1"] + [f"step {i}" for i in range(2, 7)]  # 7 distinct, 2 repeats
    tasks = [asyncio.ensure_future(batcher.execute_with_batching(uuid.uuid4(), p)) for p in prompts]
    await settle()
    await clock.advance(0.5)
    await asyncio.gather(*tasks)
    received = [len(split.atoms) for split in llm.combined()]
    assert received == [5, 2]
    batching = cache_statistics(MP)["batching"]
    assert batching["batches"] == len(received) == 2
    assert batching["total_requests_batched"] == sum(received) == 7
    assert batching["avg_batch_size"] == 3.5
    assert batching["deduplicated"] == 2
    assert cache_statistics()["batching"]["batches"] == 2  # counted globally too
    other = cache_statistics(uuid.uuid4())["batching"]
    assert (other["batches"], other["total_requests_batched"], other["avg_batch_size"]) == (0, 0, 0.0)


async def test_a_batch_of_one_and_pass_through_count_as_batches_of_one(redis):
    llm = FakeLLM()
    disabled = RequestBatcher(llm, policies=StaticBatchPolicy(BatchSettings(False, 5, 500)))
    await disabled.execute_with_batching(uuid.uuid4(), "alone")
    await disabled.execute_with_batching(uuid.uuid4(), "alone again")
    assert llm.calls == 2
    batching = layer_statistics("batching")
    assert (batching["batches"], batching["total_requests_batched"], batching["avg_batch_size"]) == (2, 2, 1.0)


async def test_lone_re_sends_are_counted_as_parse_fallbacks_not_batches(redis):
    llm = FakeLLM(respond=lambda split: "no markers at all")
    batcher = RequestBatcher(llm, batch_window_ms=0, policies=StaticBatchPolicy(BatchSettings(True, 3, 0)))
    await asyncio.gather(*(batcher.execute_with_batching(uuid.uuid4(), f"q{i}") for i in range(3)))
    assert llm.calls == 4  # one combined call, then each atom alone
    batching = layer_statistics("batching")
    assert (batching["batches"], batching["total_requests_batched"], batching["parse_fallbacks"]) == (1, 3, 3)


@pytest.mark.django_db(transaction=True)
async def test_the_llm_clients_batches_are_counted_per_masterplan(redis, seeded_defaults):
    from cache_app.llm.providers import SimulatedProvider

    client = LLMClient(
        SimulatedProvider(call_overhead_seconds=0, seconds_per_output_token=0),
        policies=StaticBatchPolicy(BatchSettings(True, 4, 10_000)),
    )
    await asyncio.gather(
        *(
            client.generate(f"atom {i}", temperature=0.0, use_batching=True, atom_id=uuid.uuid4(), masterplan_id=MP)
            for i in range(4)
        )
    )
    await client.aclose()
    batching = layer_statistics("batching", MP)
    assert (batching["batches"], batching["total_requests_batched"]) == (1, 4)


def test_the_original_plans_shape_is_kept_exactly(redis):
    document = cache_statistics()
    for name, expected in ORIGINAL_SHAPE.items():
        if isinstance(expected, dict):
            for field, kind in expected.items():
                assert isinstance(document[name][field], kind), (name, field)
        else:
            assert isinstance(document[name], expected), name
    assert {"masterplan_id", "cost", "llm_provider"} <= set(document)  # the extras sit beside it


def test_layer_statistics_rejects_unknown_layers_and_bad_ids(redis):
    with pytest.raises(ValueError, match="layer"):
        layer_statistics("disk")
    with pytest.raises(ValueError, match="UUID"):
        layer_statistics("llm", "not-a-uuid")


def test_counters_survive_in_redis_for_other_processes(redis):
    get_counters().incr("batch", "batches", 3, masterplan_id=MP)
    get_counters().flush()
    from cache_app.core import keys

    assert float(redis.hget(keys.stats("batch", MP), "batches")) == 3.0
