"""The figures at the top of the admin index: the state of the caches at a glance.

Hit rates and totals are the statistics document the API serves. "Today" is the current
total minus the last snapshot taken before local midnight; without such a snapshot the
figure counts from when the counters started, and says so.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from cache_app.health import Check, check_broker, check_redis
from cache_app.models import StatsSnapshot
from cache_app.statistics import cache_statistics

# The index must stay quick when the broker is down.
BROKER_TIMEOUT_SECONDS = 0.5


@dataclass(frozen=True)
class HomeSummary:
    llm_hit_rate: float
    rag_hit_rate: float
    similar_share: float | None  # similar hits / all RAG hits
    saved_today: float
    spent_today: float
    today_since: dt.datetime | None  # None: counted since the counters started
    provider: str
    simulated: bool
    health: tuple[Check, ...]
    last_snapshot_at: dt.datetime | None

    @property
    def healthy(self) -> bool:
        return all(check.ok for check in self.health)


def _since(current: float, baseline: float | None) -> float:
    if baseline is None or current < baseline:  # no baseline, or Redis lost the counters today
        return current
    return current - baseline


def home_summary(*, now: dt.datetime | None = None, stats: dict[str, Any] | None = None) -> HomeSummary:
    stats = stats if stats is not None else cache_statistics()
    midnight = timezone.localtime(now or timezone.now()).replace(hour=0, minute=0, second=0, microsecond=0)
    baseline = StatsSnapshot.objects.filter(taken_at__lt=midnight).order_by("-taken_at").first()
    latest = StatsSnapshot.objects.order_by("-taken_at").values_list("taken_at", flat=True).first()
    rag = stats["rag_cache"]
    rag_hits = rag["exact_hits"] + rag["similar_hits"]
    return HomeSummary(
        llm_hit_rate=stats["llm_cache"]["hit_rate"],
        rag_hit_rate=rag["hit_rate"],
        similar_share=rag["similar_hits"] / rag_hits if rag_hits else None,
        saved_today=_since(stats["cost"]["saved_usd"], baseline.saved_usd if baseline else None),
        spent_today=_since(stats["cost"]["spent_usd"], baseline.spent_usd if baseline else None),
        today_since=midnight if baseline else None,
        provider=stats["llm_provider"],
        simulated=bool(stats["llm_provider_simulated"]),
        health=(check_redis(), check_broker(timeout=BROKER_TIMEOUT_SECONDS)),
        last_snapshot_at=latest,
    )
