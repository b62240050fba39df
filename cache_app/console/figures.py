"""Per-masterplan figures for the admin changelist, read in ONE pipelined Redis round trip per page.

The durable counters (hit and miss counts, dollars saved), the activity stamps written by
their flush, and the live-entry counts of the last census are all Redis hashes, so a
page of any size costs one round trip, never one per row. Counts a process has not
flushed yet (at most ``COUNTER_FLUSH_SECONDS`` old) are not included.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cache_app.core import keys
from cache_app.core.redis_client import RedisGuard, get_breaker, get_redis
from cache_app.llm.pricing import COST_LAYER, SAVED

_LLM_FIELDS = ("hits", "misses")
_RAG_FIELDS = ("hits", "similar_hits", "misses")


@dataclass(frozen=True)
class MasterplanFigures:
    llm_entries: int | None  # None: not counted yet (no census)
    rag_entries: int | None
    lookups: int
    hits: int
    saved_usd: float
    last_activity: dt.datetime | None

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.lookups if self.lookups else None


@dataclass(frozen=True)
class PageFigures:
    """Figures per masterplan id (canonical string); ``available`` is False when Redis could not be read."""

    rows: dict[str, MasterplanFigures]
    census_at: dt.datetime | None
    census_complete: bool
    available: bool = True


def _number(raw: Any) -> float:
    return float(raw) if raw is not None else 0.0


def _when(raw: Any) -> dt.datetime | None:
    return None if raw is None else dt.datetime.fromtimestamp(float(raw), tz=dt.UTC)


def masterplan_figures(
    masterplan_ids: Iterable[Any], *, redis: Any = None, guard: RedisGuard | None = None
) -> PageFigures:
    """Figures of these masterplans from one pipelined round trip (fails open: ``available=False``)."""
    ids = [keys.scope(mp) for mp in masterplan_ids]
    client = redis if redis is not None else get_redis()
    census_fields = [f"{layer}:{mp}" for mp in ids for layer in ("llm", "rag")]

    def read() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        pipe.hmget(keys.console_census(), ["taken_at", "complete", *census_fields])
        pipe.hmget(keys.activity(), ids or ["-"])
        for mp in ids:
            pipe.hmget(keys.stats("llm", mp), _LLM_FIELDS)
            pipe.hmget(keys.stats("rag", mp), _RAG_FIELDS)
            pipe.hmget(keys.stats(COST_LAYER, mp), [SAVED])
        return pipe.execute()

    replies = (guard or RedisGuard(get_breaker(), layer="console")).run("figures", read, None)
    if replies is None:
        return PageFigures({}, None, False, available=False)
    (taken_at, complete, *live), activity, *per_row = replies
    counted = taken_at is not None
    rows = {}
    for position, mp in enumerate(ids):
        llm, rag, cost = per_row[3 * position : 3 * position + 3]
        hits = _number(llm[0]) + _number(rag[0]) + _number(rag[1])
        rows[mp] = MasterplanFigures(
            llm_entries=int(_number(live[2 * position])) if counted else None,
            rag_entries=int(_number(live[2 * position + 1])) if counted else None,
            lookups=int(hits + _number(llm[1]) + _number(rag[2])),
            hits=int(hits),
            saved_usd=_number(cost[0]),
            last_activity=_when(activity[position]),
        )
    return PageFigures(rows, _when(taken_at), counted and _number(complete) == 1)
