"""Physical deletion of dead RAG entries and log segments: SCAN + Lua that re-checks each tag.

Never KEYS, never one giant DEL, and never on a lookup path: these run after an
invalidation (inline or as a Celery task) and in the periodic sweep. Errors propagate
(callers are Celery tasks, which retry, or an invalidation, which defers to one).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import redis

from cache_app.core import keys
from cache_app.core.cluster import scan_pages
from cache_app.core.scripts import RECLAIM_LUA
from cache_app.rag.cache.index import RAGIndex

SCAN_COUNT = 10_000
RECLAIM_BATCH = 1_000


def reclaim_scope(client: redis.Redis, index: RAGIndex, masterplan_id: str | None) -> int:
    """Delete the dead entries and dead log segments of one scope; returns the entries deleted."""
    removed = 0
    for page in _scan(client, keys.rag_scope_pattern(masterplan_id)):
        removed += _reclaim_entries(client, masterplan_id, page)
    _trim_logs(client, index, masterplan_id)
    return removed


def reclaim_layer(client: redis.Redis, index: RAGIndex) -> int:
    """Delete the dead entries and log segments of every scope of the layer."""
    removed, scopes = 0, set()
    for page in _scan(client, keys.rag_layer_pattern()):
        groups: dict[str | None, list[Any]] = {}
        for key in page:
            scope_name = keys.parse_rag_entry(key)
            if scope_name is not None:
                groups.setdefault(None if scope_name == keys.GLOBAL_SCOPE else scope_name, []).append(key)
            elif (registry_scope := keys.parse_rag_namespaces(key)) is not None:
                scopes.add(None if registry_scope == keys.GLOBAL_SCOPE else registry_scope)
        for masterplan_id, entries in groups.items():
            removed += _reclaim_entries(client, masterplan_id, entries)
    for masterplan_id in scopes:
        _trim_logs(client, index, masterplan_id)
    return removed


def _trim_logs(client: redis.Redis, index: RAGIndex, masterplan_id: str | None) -> None:
    """Unlink the log segments of the scope's namespaces that can only hold dead records.

    Every segment older than the one before the current head was filled before the
    invalidation (a writer reads the generation before the head), so it holds only
    dead records. The last two stay: they may hold records written since.
    """
    namespaces = client.hgetall(keys.rag_namespaces(masterplan_id))
    if not namespaces:
        return
    logs = [(keys.rag_log_base(masterplan_id, _text(nsid), int(dim)), int(dim)) for nsid, dim in namespaces.items()]
    bounds = client.mget([key for base, _ in logs for key in (keys.rag_log_head(base), keys.rag_log_first(base))])
    doomed = []
    for position, (base, dim) in enumerate(logs):
        head, first = bounds[2 * position], bounds[2 * position + 1]
        if head is not None:
            oldest = int(head) - index.retention_segments(dim)
            if first is not None:
                oldest = max(oldest, int(first))
            doomed += [keys.rag_log_segment(base, n) for n in range(oldest, int(head) - 1)]
    for start in range(0, len(doomed), RECLAIM_BATCH):
        client.unlink(*doomed[start : start + RECLAIM_BATCH])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _scan(client: redis.Redis, pattern: str) -> Generator[list[Any], None, None]:
    """SCAN pages of every primary (for reclaim only; lookups never scan)."""
    for page in scan_pages(client, pattern, SCAN_COUNT):
        if page:
            yield page


def _reclaim_entries(client: redis.Redis, masterplan_id: str | None, entries: list[Any]) -> int:
    """UNLINK the dead ones among ``entries`` (one scope), re-checking each tag atomically in Lua."""
    epoch_key, gen_key = keys.rag_epoch(masterplan_id), keys.rag_generation(masterplan_id)
    pipe = client.pipeline(transaction=False)
    for start in range(0, len(entries), RECLAIM_BATCH):
        batch = entries[start : start + RECLAIM_BATCH]
        pipe.execute_command("EVAL", RECLAIM_LUA, 2 + len(batch), epoch_key, gen_key, *batch)
    return sum(int(n) for n in pipe.execute())
