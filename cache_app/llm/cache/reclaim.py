"""Physical deletion of dead LLM entries: SCAN + Lua that re-checks each tag and UNLINKs.

Never KEYS, never one giant DEL. Every script re-reads the scope's tag in the same atomic
step in which it deletes, so an entry written under the current tag is never touched.

* One scope (after ``invalidate_masterplan``): each call of ``RECLAIM_SCAN_LUA`` runs one
  SCAN step server-side, on the node that owns the scope's slot (every key of a scope
  shares its hash tag) (COUNT ``SCOPE_SCAN_COUNT``) and UNLINKs the dead keys it found;
  the keys never travel to the client.
* The whole layer (after ``invalidate_all``, and the periodic sweep): client-side SCAN
  pages (COUNT ``SCAN_COUNT``) of every primary (a Redis Cluster's too), grouped by scope,
  deleted by ``RECLAIM_LUA`` in batches of ``BATCH_SIZE`` keys, one pipelined round trip per page.

Errors propagate: callers are Celery tasks (which retry) or the inline path of an
invalidation (which logs and defers to the task).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import redis
import redis.asyncio
from redis.client import Pipeline
from redis.commands.core import AsyncScript, Script

from cache_app.core import keys
from cache_app.core.cluster import scan_pages

logger = logging.getLogger(__name__)

SCAN_COUNT = 10_000
BATCH_SIZE = 1_000
# Per server-side step of a scope reclaim: ~3 ms of Redis time on a loaded 2-core machine.
SCOPE_SCAN_COUNT = 1_000


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _group_by_scope(page: Iterable[Any]) -> dict[str | None, list[Any]]:
    groups: dict[str | None, list[Any]] = defaultdict(list)
    for key in page:
        scope_name = keys.parse_llm_entry(key)
        if scope_name is not None:
            groups[None if scope_name == keys.GLOBAL_SCOPE else scope_name].append(key)
    return groups


def _queue(pipe: Pipeline, script: Script, masterplan_id: str | None, entries: list[Any], batch_size: int) -> int:
    epoch_key, gen_key = keys.llm_epoch(masterplan_id), keys.llm_generation(masterplan_id)
    queued = 0
    for batch in _batches(entries, batch_size):
        script(keys=[epoch_key, gen_key, *batch], client=pipe)
        queued += 1
    return queued


def reclaim_scope(
    client: redis.Redis, scan_script: Script, masterplan_id: str | None, *, scan_count: int = SCOPE_SCAN_COUNT
) -> int:
    """Delete the dead entries of one scope (server-side SCAN steps); returns how many were deleted."""
    script_keys = [keys.llm_epoch(masterplan_id), keys.llm_generation(masterplan_id)]
    pattern = keys.llm_scope_pattern(masterplan_id)
    removed, cursor = 0, 0
    while True:
        cursor, deleted = scan_script(keys=script_keys, args=[cursor, pattern, scan_count], client=client)
        removed += int(deleted)
        if int(cursor) == 0:
            return removed


def reclaim_layer(
    client: redis.Redis, script: Script, *, scan_count: int = SCAN_COUNT, batch_size: int = BATCH_SIZE
) -> int:
    """Delete the dead entries of every scope of the layer (after invalidate_all, or the periodic sweep)."""
    removed = 0
    for page in scan_pages(client, keys.llm_layer_pattern(), scan_count):  # every primary of a Cluster
        if page:
            pipe = client.pipeline(transaction=False)
            queued = sum(_queue(pipe, script, mp, entries, batch_size) for mp, entries in _group_by_scope(page).items())
            if queued:
                removed += sum(int(n) for n in pipe.execute())
    return removed


async def areclaim_scope(
    client: redis.asyncio.Redis,
    scan_script: AsyncScript,
    masterplan_id: str | None,
    *,
    scan_count: int = SCOPE_SCAN_COUNT,
) -> int:
    script_keys = [keys.llm_epoch(masterplan_id), keys.llm_generation(masterplan_id)]
    pattern = keys.llm_scope_pattern(masterplan_id)
    removed, cursor = 0, 0
    while True:
        cursor, deleted = await scan_script(keys=script_keys, args=[cursor, pattern, scan_count], client=client)
        removed += int(deleted)
        if int(cursor) == 0:
            return removed


async def areclaim_layer(
    client: redis.asyncio.Redis, script: AsyncScript, *, scan_count: int = SCAN_COUNT, batch_size: int = BATCH_SIZE
) -> int:
    pattern = keys.llm_layer_pattern()
    removed, cursor = 0, 0
    while True:
        cursor, page = await client.scan(cursor, match=pattern, count=scan_count)
        groups = _group_by_scope(page or [])
        if groups:
            pipe = client.pipeline(transaction=False)
            for mp, entries in groups.items():
                epoch_key, gen_key = keys.llm_epoch(mp), keys.llm_generation(mp)
                for batch in _batches(entries, batch_size):
                    await script(keys=[epoch_key, gen_key, *batch], client=pipe)
            removed += sum(int(n) for n in await pipe.execute())
        if int(cursor) == 0:
            return removed
