"""LLMClient.lookup (a cache-only read) and generate(lookup=False) (the wave path's second half)."""

from __future__ import annotations

import uuid

import pytest

from cache_app.llm.cache import LLMPromptCache
from cache_app.llm.client import LLMClient
from cache_app.llm.providers.simulated import SimulatedProvider

MP = uuid.UUID("55555555-5555-4555-8555-555555555555")


class Counting(SimulatedProvider):
    async def complete(self, request):
        self.calls += 1
        return self.plan(request)


@pytest.fixture
def client() -> LLMClient:
    return LLMClient(Counting(call_overhead_seconds=0, seconds_per_output_token=0))


async def test_lookup_never_calls_the_provider_and_counts_a_miss(redis, client):
    assert await client.lookup("never seen", temperature=0.0, masterplan_id=MP) is None
    assert client.provider.calls == 0
    assert LLMPromptCache().stats(MP)["misses"] == 1


@pytest.mark.django_db(transaction=True)
async def test_lookup_returns_a_priced_hit_after_generate(redis, client, seeded_defaults):
    first = await client.generate("tell me", temperature=0.0, system="be brief", masterplan_id=MP)
    hit = await client.lookup("tell me", temperature=0.0, system="be brief", masterplan_id=MP)
    assert hit is not None
    assert (hit.text, hit.cached, hit.cache_layer, hit.cost_usd) == (first.text, True, "llm", 0.0)
    assert hit.saved_usd > 0
    assert await client.lookup("tell me", temperature=0.0, system="be long", masterplan_id=MP) is None  # params count
    assert client.provider.calls == 1


async def test_generate_without_lookup_counts_no_second_miss_and_stores_the_answer(redis, client):
    assert await client.lookup("wave atom", temperature=0.0, masterplan_id=MP) is None  # the wave's lookup
    answered = await client.generate("wave atom", temperature=0.0, masterplan_id=MP, lookup=False)
    assert answered.cached is False
    stats = LLMPromptCache().stats(MP)
    assert stats["misses"] == 1
    assert stats["writes"] == 1
    assert (await client.lookup("wave atom", temperature=0.0, masterplan_id=MP)).text == answered.text


async def test_lookup_validates_like_generate(client):
    with pytest.raises(ValueError, match="temperature"):
        await client.lookup("p", temperature=5)
    with pytest.raises(ValueError, match="prompt"):
        await client.lookup("  ")
