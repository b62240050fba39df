"""The dashboard: downsampling running totals (with Redis resets), bounded queries on a week of snapshots, the page."""

import datetime as dt
import uuid
import xml.etree.ElementTree as ET

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cache_app.console import dashboard
from cache_app.console.dashboard import COUNTERS, RANGES, downsample
from cache_app.models import Masterplan, StatsSnapshot

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
MP = uuid.UUID("cccccccc-2222-4222-8222-000000000003")
URL = "admin:cache_app_statssnapshot_dashboard"


def row(pk: int, minutes_ago: float, **values: float) -> tuple:
    return (pk, NOW - dt.timedelta(minutes=minutes_ago), *(values.get(name, 0.0) for name in COUNTERS))


def test_downsample_sums_increases_per_bucket():
    start = NOW - dt.timedelta(minutes=10)
    baseline = row(1, 12, llm_hits=100, llm_misses=50)
    rows = [
        row(2, 9.5, llm_hits=110, llm_misses=50),  # bucket 0: +10 hits
        row(3, 9.2, llm_hits=115, llm_misses=55),  # bucket 0: +5 hits, +5 misses
        row(4, 0.5, llm_hits=120, llm_misses=55),  # bucket 9: +5 hits
    ]
    sampled = downsample(baseline, iter(rows), start=start, step=dt.timedelta(minutes=1), buckets=10)
    assert sampled.sums["llm_hits"] == [15, 0, 0, 0, 0, 0, 0, 0, 0, 5]
    assert sampled.sums["llm_misses"][0] == 5
    assert sampled.rows == 3
    assert (sampled.baseline_id, sampled.segment_ends, sampled.last_id) == (1, [4], 4)


def test_a_counter_that_drops_was_reset_and_counts_from_zero():
    start = NOW - dt.timedelta(minutes=3)
    rows = [
        row(1, 2.5, saved_usd=10.0, llm_hits=40),
        row(2, 1.5, saved_usd=12.0, llm_hits=45),
        row(3, 0.5, saved_usd=1.5, llm_hits=3),  # Redis restarted: totals start again
    ]
    sampled = downsample(None, iter(rows), start=start, step=dt.timedelta(minutes=1), buckets=3)
    # Without a row before the range the counters are taken to start at zero.
    assert sampled.sums["saved_usd"] == [10.0, 2.0, 1.5]
    assert sampled.sums["llm_hits"] == [40, 5, 3]
    assert sampled.segment_ends == [2, 3]


def test_distributions_over_a_range_survive_a_reset():
    def snap(minutes_ago: float, batches: int, sizes: dict, saved: float) -> None:
        StatsSnapshot.objects.create(
            taken_at=NOW - dt.timedelta(minutes=minutes_ago),
            batches=batches,
            batch_sizes=sizes,
            top_masterplans=[[str(MP), saved]],
        )

    snap(120, 100, {"5": 10}, 1.0)  # before the range: the baseline
    snap(30, 115, {"5": 14, "2": 1}, 3.0)
    snap(20, 1, {"5": 1}, 0.5)  # Redis restarted: totals start again
    totals = dashboard.range_distributions(dashboard.load(RANGES["1h"], now=NOW))
    # (14 - 10) and (1 - 0) before the reset, then 1 counted from zero.
    assert totals["batch_sizes"] == {"5": 5.0, "2": 1.0}
    assert totals["top_masterplans"] == {str(MP): pytest.approx(2.5)}


def _week_of_snapshots() -> None:
    """10,080 minute snapshots with steady traffic: 3 LLM hits and 1 miss, $0.01 saved per minute."""
    rows, start = [], NOW - dt.timedelta(days=7)
    for minute in range(7 * 24 * 60):
        rows.append(
            StatsSnapshot(
                taken_at=start + dt.timedelta(minutes=minute, seconds=30),
                llm_hits=3 * minute,
                llm_misses=minute,
                saved_usd=0.01 * minute,
                batch_sizes={"5": minute},
                similarity_scores={"le:0.97": minute, "le:0.8": minute // 2},
                top_masterplans=[[str(MP), 0.01 * minute]],
            )
        )
    StatsSnapshot.objects.bulk_create(rows, batch_size=2000)


@pytest.mark.slow
def test_a_week_of_minute_snapshots_costs_a_bounded_number_of_queries():
    _week_of_snapshots()
    Masterplan.objects.create(id=MP, name="week-long plan")
    for key in ("1h", "24h", "7d"):
        with CaptureQueriesContext(connection) as queries:
            board = dashboard.build(RANGES[key], now=NOW)
        # baseline + rows + JSON of the segment ends + masterplan names
        assert len(queries) <= 4, [q["sql"][:80] for q in queries]
        assert not board.empty
    assert board.rows == 10_080
    assert board.totals["llm_hits"] == pytest.approx(3 * 10_079)
    assert board.top_masterplans[0]["name"] == "week-long plan"
    assert board.top_masterplans[0]["saved_usd"] == pytest.approx(0.01 * 10_079)
    root = ET.fromstring(str(board.charts["hit_rate"]))
    assert root.get("data-kind") == "line"
    assert int(root.get("data-points")) <= 2 * RANGES["7d"].buckets  # downsampled: one point per hour


def test_page_with_snapshots_renders_every_chart(admin_client):
    now = timezone.now()
    StatsSnapshot.objects.create(taken_at=now - dt.timedelta(minutes=5), llm_hits=10, llm_misses=10)
    StatsSnapshot.objects.create(
        taken_at=now - dt.timedelta(minutes=1),
        llm_hits=30,
        llm_misses=15,
        rag_exact_hits=5,
        rag_misses=5,
        saved_usd=1.25,
        spent_usd=0.5,
        batch_sizes={"3": 4},
        similarity_scores={"le:0.97": 2},
        redis_errors=1,
        fail_open={"failed:rag:get": 1},
    )
    response = admin_client.get(reverse(URL), {"range": "1h"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count('class="console-chart"') == 6
    assert "failed:rag:get" in html
    assert "Last hour" in html
    assert 'id="console-empty"' not in html


def test_empty_state_says_how_to_produce_traffic(admin_client):
    response = admin_client.get(reverse(URL))
    html = response.content.decode()
    assert 'id="console-empty"' in html
    assert "/api/v2/llm/generate" in html
    assert "celery -A mgecache_site beat" in html


def test_unknown_range_falls_back_with_a_message(admin_client):
    response = admin_client.get(reverse(URL), {"range": "1y"})
    assert response.status_code == 200
    assert response.context["board"].time_range.key == dashboard.DEFAULT_RANGE
    assert "Unknown range" in response.content.decode()


def test_dashboard_needs_the_view_permission(client, django_user_model):
    user = django_user_model.objects.create_user("plain", password="x", is_staff=True)
    client.force_login(user)
    assert client.get(reverse(URL)).status_code == 403


def test_snapshot_now_button(admin_client, redis):
    response = admin_client.post(reverse("admin:cache_app_statssnapshot_snapshot_now"), {"range": "1h"})
    assert response.status_code == 302
    assert response["Location"].endswith("?range=1h")
    assert StatsSnapshot.objects.count() == 1
    assert admin_client.get(reverse("admin:cache_app_statssnapshot_snapshot_now")).status_code == 405
