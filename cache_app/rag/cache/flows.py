"""The RAG cache's round trips: a call's request, the flows' drivers, and a namespace's sync.

Every Redis exchange of :class:`~cache_app.rag.cache.cache.RAGQueryCache` is a generator (a
*flow*) that yields the commands of one pipelined round trip and receives their replies; the
sync and async drivers here run the same flows. A flow that yields no commands asks its driver
to pause (PAUSE_SECONDS) while another caller fetches a namespace's log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cache_app.core import keys
from cache_app.core.layer import AsyncRedis, SyncRedis
from cache_app.rag.cache.codec import CachedRAGResult
from cache_app.rag.cache.index import Horizon, NamespaceIndex, Position, RAGIndex
from cache_app.rag.guard import OPEN_SCREEN, HitScreen

# Log segments fetched per round trip when a process rebuilds a namespace (8 x 2 MiB).
REBUILD_BATCH_SEGMENTS = 8
# A lookup that finds another caller fetching the namespace's log waits for it at most this
# long (polling every PAUSE_SECONDS), then fetches what is still missing; after
# SYNC_ATTEMPTS - 1 waits it fetches without waiting for its turn.
LOADER_WAIT_SECONDS = 3.0
PAUSE_SECONDS = 0.002
SYNC_ATTEMPTS = 3


Commands = list[tuple[Any, ...]]
Flow = Generator[Commands, list[Any], Any]
Confirmation = Generator[Commands, list[Any], CachedRAGResult | None]


def int_or_zero(raw: Any) -> int:
    return 0 if raw is None else int(raw)


def int_or_none(raw: Any) -> int | None:
    return None if raw is None else int(raw)


@dataclass
class Request:
    """Everything one call needs, validated, with its keys built once."""

    query: str
    model: str
    top_k: int
    masterplan_id: str | None
    embedding: np.ndarray  # float32 as given
    unit: np.ndarray  # float32, L2-normalised
    digest: str
    entry_key: str
    epoch_key: str
    gen_key: str
    registry_key: str
    nsid: str
    log_base: str
    head_key: str
    first_key: str
    ns: NamespaceIndex
    screen: HitScreen = OPEN_SCREEN  # the policy's hit guard / shadow mode, set per lookup

    @property
    def dim(self) -> int:
        return int(self.unit.shape[0])

    def segment(self, number: int) -> str:
        return keys.rag_log_segment(self.log_base, number)


@dataclass
class Outcome:
    result: CachedRAGResult | None = None
    corrupt: tuple[str, ...] = ()
    tag: bytes = b""  # the scope's tag seen by a miss (its write token's)


def drive(client: SyncRedis, flow: Flow) -> Any:
    """Run ``flow`` on a sync client: each yielded list of commands is one pipelined round trip."""
    try:
        commands = next(flow)
        while True:
            if not commands:  # the flow waits for another caller (polling with a deadline)
                time.sleep(PAUSE_SECONDS)
                commands = flow.send([])
                continue
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            commands = flow.send(pipe.execute())
    except StopIteration as stop:
        return stop.value


async def adrive(client: AsyncRedis, flow: Flow) -> Any:
    """:func:`drive` on an asyncio client."""
    try:
        commands = next(flow)
        while True:
            if not commands:
                await asyncio.sleep(PAUSE_SECONDS)
                commands = flow.send([])
                continue
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            commands = flow.send(await pipe.execute())
    except StopIteration as stop:
        return stop.value


def tail_reads(req: Request, pos: Position) -> Commands:
    if pos.segment is None:
        return []
    return [
        ("GETRANGE", req.segment(pos.segment), pos.offset, -1),
        ("GETRANGE", req.segment(pos.segment + 1), 0, -1),
    ]


def sync_namespace(
    req: Request, pos: Position, horizon: Horizon, tails: list[bytes], now: float, index: RAGIndex
) -> Flow:
    """Bring the namespace's mirror up to ``horizon`` before a search (usually with bytes already read).

    Whatever another caller did to the shared mirror meanwhile, the search runs only once
    the mirror holds every record appended before this lookup read the log head (the
    index's ``plan`` says what is still lacking). Fetching is done by one caller at a
    time; the others wait for it, then fetch only what it did not cover. A caller still
    short after SYNC_ATTEMPTS - 1 waits fetches without the claim: bytes applied twice are
    skipped, so concurrent fetches never double a row.
    """
    ns = req.ns
    version, reads = ns.advance(pos, horizon, tails, now)
    for attempt in range(SYNC_ATTEMPTS):
        if not reads:
            return
        claim = ns.claim_loading()
        if claim is None and attempt < SYNC_ATTEMPTS - 1:
            # Another caller is fetching this namespace: wait for it (bounded), then see
            # what is still missing (usually nothing).
            deadline = time.monotonic() + LOADER_WAIT_SECONDS
            while ns.loading() and time.monotonic() < deadline:
                yield []  # the driver pauses briefly (sleep / asyncio.sleep)
            version, reads = ns.plan(horizon)
            continue
        try:
            # A few segments per round trip: each reply stays a few MB, far from the socket
            # timeout even on a busy server, and progress is kept if a later batch fails
            # (the next lookup continues from there).
            for start in range(0, len(reads), REBUILD_BATCH_SEGMENTS):
                batch = reads[start : start + REBUILD_BATCH_SEGMENTS]
                blobs = yield [("GETRANGE", req.segment(number), offset, -1) for number, offset in batch]
                loaded = ns.load_segments(
                    version, [(n, o, b) for (n, o), b in zip(batch, blobs, strict=True)], now, horizon
                )
                if loaded is False:
                    return  # corrupt bytes: the mirror was reset; search what is left, rebuild next time
                if loaded is None:
                    break  # the mirror restarted meanwhile: plan again
        finally:
            if claim is not None:
                ns.release_loading(claim)
        index.enforce_budget()
        version, reads = ns.plan(horizon)


def cosine(embedding: np.ndarray, unit: np.ndarray) -> float:
    if embedding.shape != unit.shape:
        return -1.0
    norm = float(np.linalg.norm(embedding))
    return float(np.dot(embedding, unit) / norm) if norm > 0 else -1.0


def extend_ttl(key: str, ttl: int) -> Commands:
    """Set the TTL if the key has none, else raise it if ``ttl`` is longer (never shorten it)."""
    return [("EXPIRE", key, ttl, "NX"), ("EXPIRE", key, ttl, "GT")]
