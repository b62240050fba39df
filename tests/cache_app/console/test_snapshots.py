"""Snapshots: the figures come from the statistics document and the durable counters; retention; scheduling."""

import asyncio
import datetime as dt
import threading
import uuid

import numpy as np
import pytest
from django.conf import settings
from django.utils import timezone

from batching_app.batcher import RequestBatcher, StaticBatchPolicy
from cache_app.console import scheduler
from cache_app.console.snapshots import cleanup_snapshots, take_snapshot, take_snapshot_now
from cache_app.core import keys
from cache_app.core.counters import DurableCounters, get_counters, histogram_field
from cache_app.core.policies import BatchSettings
from cache_app.core.redis_client import CircuitBreaker, RedisGuard
from cache_app.llm.pricing import get_ledger
from cache_app.models import StatsSnapshot
from cache_app.rag.cache import RAGIndex, RAGQueryCache
from cache_app.statistics import cache_statistics
from cache_app.tasks import cleanup_stats_snapshots, take_stats_snapshot
from tests.batching_app.fakes import FakeLLM, answer_for
from tests.cache_app.console.conftest import dead_redis, fill

pytestmark = pytest.mark.django_db

MP_A = uuid.UUID("aaaaaaaa-1111-4111-8111-000000000001")
MP_B = uuid.UUID("bbbbbbbb-1111-4111-8111-000000000002")


# --- the counters the console needed and nothing counted before ---------------------------------


def test_histogram_field_buckets():
    bounds = (0.5, 0.9, 0.95, 1.0)
    assert [histogram_field(v, bounds) for v in (-0.2, 0.5, 0.51, 0.95, 0.951, 1.0, 1.2)] == [
        "le:0.5",
        "le:0.5",
        "le:0.9",
        "le:0.95",
        "le:1",
        "le:1",
        "le:+Inf",
    ]


async def test_the_batcher_counts_batches_requests_and_sizes_durably(redis):
    counters = DurableCounters(redis, flush_seconds=60)
    policy = StaticBatchPolicy(BatchSettings(enabled=True, max_batch_size=3, batch_window_ms=60_000))
    batcher = RequestBatcher(FakeLLM(), policies=policy, counters=counters)
    # 6 distinct prompts go as two batches of 3 (sent on size); a repeated prompt shares its slot.
    prompts = ["prompt 0", "prompt 0", *(f"prompt {i}" for i in range(1, 6))]
    answers = await asyncio.gather(*(batcher.execute_with_batching(uuid.uuid4(), p) for p in prompts))
    assert answers == [answer_for(p) for p in prompts]
    off = StaticBatchPolicy(BatchSettings(enabled=False, max_batch_size=3, batch_window_ms=10))
    await RequestBatcher(FakeLLM(), policies=off, counters=counters).execute_with_batching(uuid.uuid4(), "alone")
    await batcher.aclose()
    # ... and a pass-through call (batching disabled) counts as a batch of one. ``requests`` are the
    # prompts the provider received (7 distinct); the repeated one is counted as deduplicated.
    assert counters.read("batch") == {
        "batches": 3.0,
        "requests": 7.0,
        "deduplicated": 1.0,
        "size:3": 2.0,
        "size:1": 1.0,
    }


async def test_the_batcher_counts_parse_fallbacks_durably(redis):
    counters = DurableCounters(redis, flush_seconds=60)
    policy = StaticBatchPolicy(BatchSettings(enabled=True, max_batch_size=2, batch_window_ms=60_000))
    llm = FakeLLM(respond=lambda split: "no markers at all")
    batcher = RequestBatcher(llm, policies=policy, counters=counters)
    await asyncio.gather(*(batcher.execute_with_batching(uuid.uuid4(), p) for p in ("a", "b")))
    await batcher.aclose()
    assert counters.read("batch")["parse_fallbacks"] == 2.0


def test_the_guard_counts_fail_open_events_durably(redis, blackhole_port):
    dead = dead_redis(blackhole_port)
    guard = RedisGuard(CircuitBreaker(name="t", failure_threshold=1, reset_seconds=60), layer="llm")
    assert guard.run("get", lambda: dead.get("x"), "missed") == "missed"  # the error opens the breaker
    assert guard.run("get", lambda: dead.get("x"), "missed") == "missed"  # skipped while open
    assert guard.run("set", lambda: dead.get("x"), None) is None
    assert get_counters().read("fail_open") == {"failed:llm:get": 1.0, "skipped:llm:get": 1.0, "skipped:llm:set": 1.0}


def test_similarity_lookups_count_their_best_score(redis):
    cache = RAGQueryCache(redis, index=RAGIndex())
    base = np.zeros(8, dtype=np.float32)
    base[0] = 1.0
    cache.set("stored", base, [{"content": "d"}], embedding_model="m", top_k=3)
    near = np.array([0.96, 0.28, 0, 0, 0, 0, 0, 0], dtype=np.float32)  # cosine 0.96 with base
    assert cache.get("near", near, embedding_model="m", top_k=3).match == "similar"
    far = np.array([0.55, 0.835165, 0, 0, 0, 0, 0, 0], dtype=np.float32)  # cosine 0.55
    assert cache.get("far", far, embedding_model="m", top_k=3) is None
    assert get_counters().read("rag_scores") == {"le:0.97": 1.0, "le:0.6": 1.0}  # buckets (0.95, 0.97], (0.5, 0.6]


def test_counter_flush_stamps_each_masterplans_last_activity(redis):
    counters = DurableCounters(redis, flush_seconds=60, wall_clock=lambda: 1_700_000_000.0)
    counters.incr("llm", "hits", masterplan_id=MP_A)
    counters.incr("llm", "hits")  # the global scope has no activity stamp
    counters.flush()
    assert {k: float(v) for k, v in redis.hgetall(keys.activity()).items()} == {str(MP_A).encode(): 1_700_000_000.0}


# --- snapshots ---------------------------------------------------------------------------------------


def _traffic() -> None:
    counters = get_counters()
    counters.incr("llm", "hits", 6, masterplan_id=MP_A)
    counters.incr("llm", "misses", 2, masterplan_id=MP_A)
    counters.incr("rag", "hits", 3)
    counters.incr("rag", "similar_hits", 1)
    counters.incr("rag", "misses", 4)
    counters.incr("batch", "batches", 2)
    counters.incr("batch", "requests", 7)
    counters.incr("batch", "size:5")
    counters.incr("batch", "size:2")
    counters.incr("fail_open", "failed:rag:get", 2)
    counters.incr("fail_open", "skipped:rag:get", 5)
    counters.incr("rag_scores", "le:0.97", 3)
    ledger = get_ledger()
    ledger.add_spend("claude-3-5-sonnet", 0.40, masterplan_id=MP_B)
    ledger.add_saving("llm", 0.30, masterplan_id=MP_A)
    ledger.add_saving("llm", 0.05, masterplan_id=MP_B)


def test_a_snapshot_holds_the_statistics_documents_figures(redis):
    fill(MP_A, llm=2, rag=1)
    _traffic()
    stats = cache_statistics()
    snapshot = take_snapshot(now=timezone.now())
    assert (snapshot.llm_hits, snapshot.llm_misses) == (stats["llm_cache"]["total_hits"], 2)
    assert (snapshot.rag_exact_hits, snapshot.rag_similar_hits, snapshot.rag_misses) == (3, 1, 4)
    assert snapshot.saved_usd == pytest.approx(stats["cost"]["saved_usd"]) == pytest.approx(0.35)
    assert snapshot.spent_usd == pytest.approx(0.40)
    assert (snapshot.batches, snapshot.batched_requests) == (2, 7)
    assert snapshot.batch_sizes == {"2": 1, "5": 1}
    assert snapshot.similarity_scores == {"le:0.97": 3}
    assert (snapshot.redis_errors, snapshot.breaker_skips) == (2, 5)
    assert snapshot.fail_open == {"failed:rag:get": 2, "skipped:rag:get": 5}
    assert snapshot.top_masterplans == [[str(MP_A), 0.3], [str(MP_B), 0.05]]
    assert snapshot.live_entries == {"llm": 2, "rag": 1, "complete": True}
    assert snapshot.llm_provider == "simulated"
    # The census it took is what the masterplan changelist reads.
    assert redis.hget(keys.console_census(), f"llm:{MP_A}") == b"2"


def test_top_masterplans_is_bounded_by_the_setting(redis, settings):
    settings.MGECACHE = {**settings.MGECACHE, "CONSOLE_TOP_MASTERPLANS": 3}
    ledger = get_ledger()
    for i in range(6):
        ledger.add_saving("rag", 0.01 * (i + 1), masterplan_id=uuid.UUID(int=i + 1))
    snapshot = take_snapshot()
    assert [row[1] for row in snapshot.top_masterplans] == [0.06, 0.05, 0.04]


def test_no_snapshot_while_redis_is_unreachable(blackhole_port):
    dead = dead_redis(blackhole_port)
    assert take_snapshot(redis=dead) is None
    assert not StatsSnapshot.objects.exists()


def test_snapshot_now_refuses_a_second_one_within_seconds(redis):
    now = timezone.now()
    assert take_snapshot_now(now=now) is not None
    assert take_snapshot_now(now=now + dt.timedelta(seconds=5)) is None
    assert take_snapshot_now(now=now + dt.timedelta(seconds=11)) is not None


def test_cleanup_keeps_the_retention_window(settings):
    settings.MGECACHE = {**settings.MGECACHE, "CONSOLE_SNAPSHOT_RETENTION_DAYS": 2}
    now = timezone.now()
    for days in (0, 1, 1.9, 2.1, 5):
        StatsSnapshot.objects.create(taken_at=now - dt.timedelta(days=days))
    assert cleanup_snapshots(now=now) == 2
    assert StatsSnapshot.objects.count() == 3


def test_tasks_and_beat_schedule(redis):
    snapshot_id = take_stats_snapshot.delay().get()
    assert StatsSnapshot.objects.filter(pk=snapshot_id).exists()
    StatsSnapshot.objects.create(taken_at=timezone.now() - dt.timedelta(days=400))
    assert cleanup_stats_snapshots.delay().get() == 1
    schedule = {entry["task"]: entry for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["cache_app.tasks.take_stats_snapshot"]["schedule"] == 60.0
    assert schedule["cache_app.tasks.take_stats_snapshot"]["options"]["expires"] < 60
    assert "cache_app.tasks.cleanup_stats_snapshots" in schedule


def test_the_embedded_scheduler_takes_snapshots_until_stopped(monkeypatch):
    taken = threading.Event()
    calls = []

    def fake_take_snapshot():
        calls.append(1)
        taken.set()

    monkeypatch.setattr("cache_app.console.snapshots.take_snapshot", fake_take_snapshot)
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run_snapshots, args=(stop,), kwargs={"interval": 0.01})
    thread.start()
    assert taken.wait(10)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert calls


def test_the_embedded_scheduler_only_starts_without_a_broker(settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/1"
    assert scheduler.start_embedded_snapshots() is None
