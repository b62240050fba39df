"""Minute snapshots of the statistics (``StatsSnapshot`` rows) and their cleanup.

The figures come from the statistics document the API serves (``cache_statistics``) and
from the same durable counters for what that document does not carry (batch sizes,
fail-open events, similarity scores), so the console and the API never disagree.
A snapshot is skipped while Redis is unreachable: counters that read as zero would look
like a reset on the dashboard.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import redis as redis_lib
from django.utils import timezone

from cache_app.console.census import LiveEntryCensus
from cache_app.core import conf, keys
from cache_app.core.counters import DurableCounters, get_counters
from cache_app.core.redis_client import FAIL_OPEN_LAYER, get_redis
from cache_app.llm.pricing import COST_LAYER, SAVED
from cache_app.models import StatsSnapshot
from cache_app.rag.cache.cache import SCORES_LAYER
from cache_app.statistics import cache_statistics

logger = logging.getLogger(__name__)

BATCH_LAYER = "batch"


def _prefixed(totals: dict[str, float], prefix: str) -> dict[str, int]:
    return {name.removeprefix(prefix): int(value) for name, value in sorted(totals.items()) if name.startswith(prefix)}


def _statistics_figures(stats: dict[str, Any]) -> dict[str, Any]:
    """The snapshot's columns that come from the statistics document (the API's figures)."""
    llm, rag, cost, batching = stats["llm_cache"], stats["rag_cache"], stats["cost"], stats["batching"]
    return {
        "llm_hits": llm["total_hits"],
        "llm_misses": llm["total_misses"],
        "rag_exact_hits": rag["exact_hits"],
        "rag_similar_hits": rag["similar_hits"],
        "rag_misses": rag["total_misses"],
        "saved_usd": cost["saved_usd"],
        "spent_usd": cost["spent_usd"],
        "batches": batching["batches"],
        "batched_requests": batching["total_requests_batched"],
        "llm_provider": stats["llm_provider"],
    }


def _counter_figures(counters: DurableCounters) -> dict[str, Any]:
    """Figures only the durable counters hold: distributions and fail-open events."""
    fail_open = {name: int(value) for name, value in sorted(counters.read(FAIL_OPEN_LAYER).items())}
    return {
        "batch_sizes": _prefixed(counters.read(BATCH_LAYER), "size:"),
        "similarity_scores": _prefixed(counters.read(SCORES_LAYER), ""),
        "fail_open": fail_open,
        "redis_errors": sum(v for k, v in fail_open.items() if k.startswith("failed:")),
        "breaker_skips": sum(v for k, v in fail_open.items() if k.startswith("skipped:")),
    }


def _top_masterplans(client: Any, scopes: set[str], limit: int) -> list[list[Any]]:
    """[[uuid, saved_usd], ...] of the ``limit`` masterplans that saved most (one pipelined round trip)."""
    ordered = sorted(scopes)
    if not ordered:
        return []
    pipe = client.pipeline(transaction=False)
    for mp in ordered:
        pipe.hget(keys.stats(COST_LAYER, mp), SAVED)
    saved = [(mp, float(raw)) for mp, raw in zip(ordered, pipe.execute(), strict=True) if raw is not None]
    saved.sort(key=lambda item: (-item[1], item[0]))
    return [[mp, round(usd, 6)] for mp, usd in saved[:limit] if usd > 0]


def _live_figures(client: Any) -> tuple[dict[str, Any], list[list[Any]]]:
    census_tool = LiveEntryCensus(client)
    try:
        census = census_tool.run()
        census_tool.store(census)
    except (redis_lib.RedisError, OSError) as exc:
        logger.warning("could not count live cache entries: %s: %s", type(exc).__name__, exc)
        return {}, []
    live = {"llm": census.total("llm"), "rag": census.total("rag"), "complete": census.complete}
    return live, _top_masterplans(client, census.cost_scopes, int(conf.get("CONSOLE_TOP_MASTERPLANS")))


def take_snapshot(*, now: dt.datetime | None = None, redis: Any = None) -> StatsSnapshot | None:
    """Write one snapshot of the current figures; None (and nothing written) if Redis is unreachable."""
    client = redis if redis is not None else get_redis()
    try:
        client.ping()
    except (redis_lib.RedisError, OSError) as exc:
        logger.warning("statistics snapshot skipped, Redis is unreachable: %s: %s", type(exc).__name__, exc)
        return None
    figures = _statistics_figures(cache_statistics())
    figures.update(_counter_figures(get_counters()))
    live, top = _live_figures(client)
    return StatsSnapshot.objects.create(
        taken_at=now or timezone.now(), live_entries=live, top_masterplans=top, **figures
    )


def cleanup_snapshots(*, now: dt.datetime | None = None) -> int:
    """Delete snapshots older than ``CONSOLE_SNAPSHOT_RETENTION_DAYS``; returns how many."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=int(conf.get("CONSOLE_SNAPSHOT_RETENTION_DAYS")))
    deleted, _ = StatsSnapshot.objects.filter(taken_at__lt=cutoff).delete()
    return deleted


# "Take a snapshot now" in the admin: at most one per this many seconds.
SNAPSHOT_NOW_MIN_INTERVAL = dt.timedelta(seconds=10)


def take_snapshot_now(*, now: dt.datetime | None = None) -> StatsSnapshot | None:
    """A snapshot on demand (the dashboard's button); None if one was taken moments ago or Redis is down."""
    now = now or timezone.now()
    if StatsSnapshot.objects.filter(taken_at__gt=now - SNAPSHOT_NOW_MIN_INTERVAL).exists():
        return None
    return take_snapshot(now=now)
