"""The admin dashboard's data: snapshot rows of a time range, downsampled in one pass, as charts.

Snapshots hold running totals, so what happened in a time bucket is the sum of the
differences between consecutive snapshots that fall in it. A total that went down means
Redis lost its counters (a restart): from there the new total is counted from zero.

Cost is bounded whatever the range: one query for the row before the range (the
baseline), one for the numeric columns of the rows in it, one for the JSON distributions
of a handful of rows (baseline, the last row before each reset, the last row), one for
the names of the top masterplans.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone
from django.utils.safestring import SafeString

from cache_app.console import charts
from cache_app.models import Masterplan, StatsSnapshot

COUNTERS = (
    "llm_hits",
    "llm_misses",
    "rag_exact_hits",
    "rag_similar_hits",
    "rag_misses",
    "saved_usd",
    "spent_usd",
    "batches",
    "batched_requests",
    "redis_errors",
    "breaker_skips",
)
DISTRIBUTIONS = ("batch_sizes", "similarity_scores", "fail_open", "top_masterplans")
TOP_SHOWN = 10


@dataclass(frozen=True)
class TimeRange:
    key: str
    label: str
    span: dt.timedelta
    bucket: dt.timedelta
    label_format: str

    @property
    def buckets(self) -> int:
        return int(self.span / self.bucket)


RANGES = {
    r.key: r
    for r in (
        TimeRange("1h", "Last hour", dt.timedelta(hours=1), dt.timedelta(minutes=1), "%H:%M"),
        TimeRange("24h", "Last 24 hours", dt.timedelta(hours=24), dt.timedelta(minutes=15), "%H:%M"),
        TimeRange("7d", "Last 7 days", dt.timedelta(days=7), dt.timedelta(hours=1), "%a %H:%M"),
    )
}
DEFAULT_RANGE = "24h"


@dataclass
class Downsampled:
    """Per-bucket sums of each counter's increase, and the rows whose JSON the distributions need."""

    start: dt.datetime
    step: dt.timedelta
    sums: dict[str, list[float]]
    rows: int = 0
    baseline_id: int | None = None
    segment_ends: list[int] = field(default_factory=list)  # last row before each reset, then the last row
    last_id: int | None = None
    last_taken_at: dt.datetime | None = None


def downsample(
    baseline: Sequence[Any] | None, rows: Any, *, start: dt.datetime, step: dt.timedelta, buckets: int
) -> Downsampled:
    """One pass over ``(id, taken_at, *COUNTERS)`` rows in time order.

    ``baseline`` is the last row before ``start``; without one (no earlier snapshot) the
    counters are taken to have started from zero.
    """
    result = Downsampled(start, step, {name: [0.0] * buckets for name in COUNTERS})
    previous: Sequence[Any] = baseline if baseline is not None else (None, start, *([0.0] * len(COUNTERS)))
    result.baseline_id = previous[0]
    for row in rows:
        result.rows += 1
        index = min(buckets - 1, max(0, int((row[1] - start) / step)))
        _add_increase(result, index, previous[2:], row[2:])
        if previous[0] is not None and any(now < before for now, before in zip(row[2:], previous[2:], strict=True)):
            result.segment_ends.append(previous[0])
        previous = row
        result.last_id, result.last_taken_at = row[0], row[1]
    if result.last_id is not None:
        result.segment_ends.append(result.last_id)
    return result


def _add_increase(result: Downsampled, index: int, before: Sequence[float], now: Sequence[float]) -> None:
    for name, old, new in zip(COUNTERS, before, now, strict=True):
        result.sums[name][index] += new - old if new >= old else new  # a drop: counted from zero again


def _minus(after: dict[str, Any], before: dict[str, Any]) -> dict[str, float]:
    return {key: max(0.0, float(value) - float(before.get(key, 0))) for key, value in after.items()}


def range_distributions(sampled: Downsampled) -> dict[str, dict[str, float]]:
    """Each distribution's increase over the range: the sum over reset-free segments of (end - start)."""
    totals: dict[str, dict[str, float]] = {name: {} for name in DISTRIBUTIONS}
    if not sampled.segment_ends:
        return totals
    wanted = {pk for pk in (sampled.baseline_id, *sampled.segment_ends) if pk is not None}
    json_rows = {
        row[0]: row[1:] for row in StatsSnapshot.objects.filter(pk__in=wanted).values_list("pk", *DISTRIBUTIONS)
    }
    start = json_rows.get(sampled.baseline_id)
    for end_id in sampled.segment_ends:
        end = json_rows[end_id]
        for position, name in enumerate(DISTRIBUTIONS):
            after, before = _as_dict(end[position]), _as_dict(start[position]) if start else {}
            for key, value in _minus(after, before).items():
                totals[name][key] = totals[name].get(key, 0.0) + value
        start = None  # after a reset the next segment counts from zero
    return totals


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, list):  # top_masterplans: [[uuid, saved], ...]
        return {str(item[0]): item[1] for item in value if isinstance(item, list | tuple) and len(item) == 2}
    return dict(value or {})


def load(time_range: TimeRange, *, now: dt.datetime | None = None) -> Downsampled:
    """The range's snapshots, downsampled (two queries)."""
    end = now or timezone.now()
    start = end - time_range.span
    columns = ("pk", "taken_at", *COUNTERS)
    baseline = StatsSnapshot.objects.filter(taken_at__lt=start).order_by("-taken_at").values_list(*columns).first()
    rows = (
        StatsSnapshot.objects.filter(taken_at__gte=start, taken_at__lte=end)
        .order_by("taken_at", "pk")
        .values_list(*columns)
        .iterator(chunk_size=2000)
    )
    return downsample(baseline, rows, start=start, step=time_range.bucket, buckets=time_range.buckets)


def _rate(hits: float, misses: float) -> float | None:
    return hits / (hits + misses) if hits + misses > 0 else None


def _cumulative(values: Sequence[float]) -> list[float]:
    total, out = 0.0, []
    for value in values:
        total += value
        out.append(total)
    return out


def _bound(key: str) -> float:
    try:
        return float(key.removeprefix("le:"))
    except ValueError:
        return float("inf")


@dataclass
class Dashboard:
    time_range: TimeRange
    empty: bool
    charts: dict[str, SafeString] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    fail_open: list[tuple[str, int]] = field(default_factory=list)
    top_masterplans: list[dict[str, Any]] = field(default_factory=list)
    last_taken_at: dt.datetime | None = None
    rows: int = 0


def build(time_range: TimeRange, *, now: dt.datetime | None = None, threshold: float = 0.95) -> Dashboard:
    sampled = load(time_range, now=now)
    board = Dashboard(time_range, empty=sampled.rows == 0, rows=sampled.rows, last_taken_at=sampled.last_taken_at)
    if board.empty:
        return board
    labels = [
        timezone.localtime(sampled.start + sampled.step * i).strftime(time_range.label_format)
        for i in range(time_range.buckets)
    ]
    s = sampled.sums
    board.totals = {name: sum(values) for name, values in s.items()}
    board.charts["hit_rate"] = charts.line_chart(
        [
            charts.Series("LLM", [_rate(h, m) for h, m in zip(s["llm_hits"], s["llm_misses"], strict=True)]),
            charts.Series(
                "RAG (exact + similar)",
                [
                    _rate(e + sim, m)
                    for e, sim, m in zip(s["rag_exact_hits"], s["rag_similar_hits"], s["rag_misses"], strict=True)
                ],
            ),
        ],
        labels,
        title="Hit rate per layer",
        fmt=charts.percent,
        y_max=1.0,
        empty_message="No lookups in this range",
    )
    board.charts["dollars"] = charts.line_chart(
        [
            charts.Series("Saved", _cumulative(s["saved_usd"]), charts.PALETTE[2]),
            charts.Series("Spent", _cumulative(s["spent_usd"]), charts.PALETTE[3]),
        ],
        labels,
        title="Dollars saved and spent (cumulative over the range)",
        fmt=charts.dollars,
    )
    board.charts["errors"] = charts.line_chart(
        [
            charts.Series("Redis errors (failed open)", s["redis_errors"], charts.PALETTE[3]),
            charts.Series("Skipped, breaker open", s["breaker_skips"], charts.PALETTE[1]),
        ],
        labels,
        title="Errors and fail-open events per bucket",
    )
    _distribution_charts(board, range_distributions(sampled), threshold)
    return board


def _distribution_charts(board: Dashboard, dist: dict[str, dict[str, float]], threshold: float) -> None:
    sizes = sorted(dist["batch_sizes"].items(), key=lambda item: int(item[0]) if item[0].isdigit() else 10**6)
    board.charts["batch_sizes"] = charts.bar_chart(
        [(size, count) for size, count in sizes], title="Batch size distribution (prompts per upstream call)"
    )
    scores = sorted(dist["similarity_scores"].items(), key=lambda item: _bound(item[0]))
    board.charts["similarity"] = charts.bar_chart(
        [(f"\u2264{key.removeprefix('le:')}", count) for key, count in scores],
        title=f"Best similarity score per similarity lookup (highlighted: above the threshold {threshold:g})",
        highlight=lambda label: _bound(label.lstrip("\u2264")) > threshold,
        empty_message="No similarity lookups in this range",
    )
    board.fail_open = sorted(
        ((name, int(count)) for name, count in dist["fail_open"].items() if count >= 1), key=lambda item: -item[1]
    )
    top = sorted(dist["top_masterplans"].items(), key=lambda item: -item[1])[:TOP_SHOWN]
    names = dict(Masterplan.objects.filter(pk__in=[mp for mp, _ in top]).values_list("pk", "name")) if top else {}
    board.top_masterplans = [
        {"id": mp, "name": names.get(_uuid(mp), ""), "saved_usd": usd} for mp, usd in top if usd > 0
    ]
    board.charts["top_masterplans"] = charts.hbar_chart(
        [(row["name"] or row["id"], row["saved_usd"]) for row in board.top_masterplans],
        title="Top masterplans by dollars saved",
        fmt=charts.dollars,
        empty_message="No savings recorded for a masterplan in this range",
    )


def _uuid(value: str) -> Any:
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        return value
