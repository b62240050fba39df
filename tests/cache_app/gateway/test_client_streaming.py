"""LLMClient's on_delta (streamed misses) and refresh (no-cache), which the gateway's streams and headers use."""

from __future__ import annotations

import pytest

from cache_app.llm.client import LLMClient
from cache_app.llm.providers import ProviderResponse, SimulatedProvider

pytestmark = pytest.mark.django_db


def simulated() -> SimulatedProvider:
    return SimulatedProvider(call_overhead_seconds=0, seconds_per_output_token=0, output_tokens=30)


async def test_a_miss_streams_its_deltas_and_a_hit_streams_none():
    provider = simulated()
    client = LLMClient(provider)
    deltas: list[str] = []
    miss = await client.generate("stream", "gpt-4o-mini", 0, on_delta=deltas.append)
    assert len(deltas) > 1
    assert "".join(deltas) == miss.text
    assert not miss.cached
    again: list[str] = []
    hit = await client.generate("stream", "gpt-4o-mini", 0, on_delta=again.append)
    assert hit.cached
    assert hit.text == miss.text
    assert again == []
    assert provider.calls == 1


class CompleteOnly:
    """A provider without a stream method: its whole answer arrives as one delta."""

    name = "complete-only"
    simulated = False

    async def complete(self, request):
        return ProviderResponse("whole answer", request.model, 1, 2, "stop", self.name)


async def test_a_provider_without_stream_gives_one_delta():
    deltas: list[str] = []
    response = await LLMClient(CompleteOnly()).generate("x", "gpt-4o-mini", 0, on_delta=deltas.append)
    assert deltas == ["whole answer"]
    assert response.text == "whole answer"


async def test_refresh_skips_the_lookup_but_stores():
    provider = simulated()
    client = LLMClient(provider)
    first = await client.generate("fresh", "gpt-4o-mini", 0, refresh=True)
    assert not first.cached
    assert (await client.generate("fresh", "gpt-4o-mini", 0)).cached  # stored by the refresh
    assert not (await client.generate("fresh", "gpt-4o-mini", 0, refresh=True)).cached
    assert provider.calls == 2
