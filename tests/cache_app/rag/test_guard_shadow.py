"""The shadow-mode recorder: bounded, never on the lookup's thread, trimmed in the database."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from prometheus_client import REGISTRY

from cache_app.models import SimilarityShadowRecord
from cache_app.rag.shadow import MAX_QUERY_CHARS, ShadowRecorder, ShadowSample, write_samples


def dropped() -> float:
    return REGISTRY.get_sample_value("mgecache_rag_shadow_records_dropped_total") or 0.0


class Jobs:
    """A scheduler that keeps the jobs for the test to run."""

    def __init__(self) -> None:
        self.jobs: list = []
        self.delays: list[float] = []

    def __call__(self, delay, job) -> None:
        self.delays.append(delay)
        self.jobs.append(job)


def record(recorder: ShadowRecorder, n: int = 0, **fields) -> None:
    recorder.record(
        **{
            "query": f"query {n}",
            "cached_query": f"cached {n}",
            "similarity": 0.97,
            "embedding_model": "m",
            "scope": None,
            **fields,
        }
    )


def test_record_only_buffers_and_schedules_one_flush():
    written: list = []
    jobs = Jobs()
    recorder = ShadowRecorder(schedule=jobs, writer=written.append, flush_seconds=5.0, background=False)
    for n in range(3):
        record(recorder, n)
    assert written == []  # nothing written on the caller's thread
    assert jobs.delays == [5.0]
    jobs.jobs.pop()()
    assert [s.query for s in written[0]] == ["query 0", "query 1", "query 2"]
    assert recorder.pending() == 0
    record(recorder, 3)
    assert len(jobs.jobs) == 1  # the next record schedules the next flush


def test_a_full_buffer_drops_the_oldest_and_counts_it():
    written: list = []
    recorder = ShadowRecorder(capacity=2, schedule=Jobs(), writer=written.append, background=False)
    before = dropped()
    for n in range(5):
        record(recorder, n)
    assert dropped() - before == 3
    assert recorder.flush() == 2
    assert [s.query for s in written[0]] == ["query 3", "query 4"]


def test_a_failed_write_is_counted_and_never_raises():
    def failing(samples):
        raise RuntimeError("database down")

    recorder = ShadowRecorder(schedule=Jobs(), writer=failing, background=False)
    record(recorder)
    before = dropped()
    assert recorder.flush() == 0
    assert dropped() - before == 1


def test_long_queries_are_stored_truncated():
    written: list = []
    recorder = ShadowRecorder(schedule=Jobs(), writer=written.append, background=False)
    record(recorder, query="q" * (MAX_QUERY_CHARS + 50), scope="4b7f0c1e-0000-4000-8000-000000000000")
    recorder.flush()
    sample = written[0][0]
    assert len(sample.query) == MAX_QUERY_CHARS
    assert sample.scope == "4b7f0c1e-0000-4000-8000-000000000000"


def test_the_default_timer_flushes_on_another_thread():
    done = threading.Event()
    threads: list[str] = []

    def writer(samples):
        threads.append(threading.current_thread().name)
        done.set()

    recorder = ShadowRecorder(writer=writer, flush_seconds=0.0, background=False)
    record(recorder)
    assert done.wait(10)
    assert threads == ["mgecache-shadow-flush"]


@pytest.mark.django_db
def test_write_samples_inserts_and_keeps_only_the_newest_rows(settings):
    settings.MGECACHE = {**settings.MGECACHE, "RAG_SHADOW_MAX_RECORDS": 3}
    now = datetime.now(UTC)
    write_samples([ShadowSample(now, f"q{n}", f"c{n}", 0.96, "m", "global") for n in range(2)])
    write_samples([ShadowSample(now, f"q{n}", f"c{n}", 0.96, "m", "global") for n in range(2, 5)])
    assert sorted(SimilarityShadowRecord.objects.values_list("query", flat=True)) == ["q2", "q3", "q4"]
