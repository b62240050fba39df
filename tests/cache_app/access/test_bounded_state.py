"""Caller-chosen values create bounded process state: LRU bounds on batchers and document snapshots."""

import asyncio
import uuid

import pytest

from cache_app.llm.client import LLMClient, _Call
from cache_app.rag.documents import DocumentStore
from cache_app.rag.embedders import HashedNgramEmbedder


class RecordingBatcher:
    def __init__(self, call, policies=None, masterplan_id=None) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def small_bounds(settings):
    settings.MGECACHE = {
        **settings.MGECACHE,
        "LLM_BATCHER": f"{__name__}.RecordingBatcher",
        "LLM_BATCHERS_MAX": 2,
        "DOCUMENT_SCOPES_MAX": 2,
    }


async def test_batchers_are_lru_bounded_and_evicted_ones_are_closed(small_bounds):
    client = LLMClient(provider=object())

    def batcher(system: str):
        call = _Call.parse("prompt", "claude-3-5-sonnet", 0.0, 100, system, None, None)
        return client._batcher_for(client._provider, call)

    first, second = batcher("s" * 200_000), batcher("second")
    assert batcher("s" * 200_000) is first  # reused, and now the most recently used
    third = batcher("third")
    await asyncio.sleep(0)  # the eviction's aclose runs on this loop
    assert len(client._batchers) == 2
    assert (second.closed, first.closed, third.closed) == (True, False, False)
    assert all(len(str(part)) < 100 for key in client._batchers for part in key)  # no 200k-character keys


@pytest.mark.django_db
def test_document_snapshots_are_lru_bounded(small_bounds):
    store = DocumentStore(embedder=HashedNgramEmbedder(), refresh_seconds=3600)
    scopes = [str(uuid.uuid4()) for _ in range(4)]
    query = store.embedder.embed(["anything"])[0]
    for masterplan_id in scopes[:3]:
        store.search(query, masterplan_id=masterplan_id)
    assert [key[0] for key in store._scopes] == scopes[1:3]
    store.search(query, masterplan_id=scopes[1])  # used again: the most recent
    store.search(query, masterplan_id=scopes[3])
    assert [key[0] for key in store._scopes] == [scopes[1], scopes[3]]
