"""Shadow-mode records: similarity hits withheld from callers, kept for operators to review.

A lookup in shadow mode must stay as fast as any other, so ``record`` only appends to a
bounded in-memory buffer (the oldest record is dropped and counted when it is full). A
timer thread writes the buffer to ``SimilarityShadowRecord`` in one ``bulk_create`` at most
every ``RAG_SHADOW_FLUSH_SECONDS``, then trims the table to the newest
``RAG_SHADOW_MAX_RECORDS`` rows. A failed write loses that batch (counted); it never
reaches the lookup. Records still buffered are written at process exit.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cache_app.core import conf, metrics
from cache_app.core.lograte import LogInterval
from cache_app.core.state import process_wide

logger = logging.getLogger(__name__)

# Queries longer than this are stored truncated (a record is for reading, not replaying).
MAX_QUERY_CHARS = 2000
_ERROR_LOG_SECONDS = 60.0

Scheduler = Callable[[float, Callable[[], None]], None]


@dataclass(frozen=True)
class ShadowSample:
    created_at: datetime
    query: str
    cached_query: str
    similarity: float
    embedding_model: str
    scope: str


def write_samples(samples: list[ShadowSample]) -> None:
    """Insert the samples and keep only the newest RAG_SHADOW_MAX_RECORDS rows."""
    from cache_app.models import SimilarityShadowRecord

    SimilarityShadowRecord.objects.bulk_create(
        [
            SimilarityShadowRecord(
                created_at=s.created_at,
                query=s.query,
                cached_query=s.cached_query,
                similarity=s.similarity,
                embedding_model=s.embedding_model,
                scope=s.scope,
            )
            for s in samples
        ]
    )
    keep = int(conf.get("RAG_SHADOW_MAX_RECORDS"))
    oldest_kept = SimilarityShadowRecord.objects.order_by("-id").values_list("id", flat=True)[keep - 1 : keep]
    if oldest_kept:
        SimilarityShadowRecord.objects.filter(id__lt=oldest_kept[0]).delete()


def _timer(delay: float, job: Callable[[], None]) -> None:
    timer = threading.Timer(delay, job)
    timer.daemon = True
    timer.name = "mgecache-shadow-flush"
    timer.start()


class ShadowRecorder:
    """Buffers shadow records in memory and writes them in batches, off the caller's thread.

    Collaborators are injectable: ``schedule(delay, job)`` runs ``job`` later on another
    thread (default: a daemon ``threading.Timer``), ``writer`` stores a batch, ``now``
    gives the wall-clock time stamped on a record.
    """

    def __init__(
        self,
        *,
        capacity: int | None = None,
        flush_seconds: float | None = None,
        schedule: Scheduler = _timer,
        writer: Callable[[list[ShadowSample]], None] = write_samples,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        background: bool = True,
    ) -> None:
        self._capacity = capacity
        self._flush_seconds = flush_seconds
        self._schedule = schedule
        self._writer = writer
        self._now = now
        self._background = background
        self._lock = threading.Lock()
        self._buffer: deque[ShadowSample] = deque()
        self._scheduled = False
        self._error_log = LogInterval(_ERROR_LOG_SECONDS)

    @property
    def capacity(self) -> int:
        return int(conf.get("RAG_SHADOW_BUFFER") if self._capacity is None else self._capacity)

    @property
    def flush_seconds(self) -> float:
        return float(conf.get("RAG_SHADOW_FLUSH_SECONDS") if self._flush_seconds is None else self._flush_seconds)

    def record(self, *, query: str, cached_query: str, similarity: float, embedding_model: str, scope: Any) -> None:
        """The hot path: append to the buffer, and make sure a flush is scheduled. Never blocks on I/O."""
        sample = ShadowSample(
            self._now(),
            query[:MAX_QUERY_CHARS],
            cached_query[:MAX_QUERY_CHARS],
            float(similarity),
            embedding_model[:100],
            "global" if scope is None else str(scope),
        )
        with self._lock:
            if len(self._buffer) >= self.capacity:
                self._buffer.popleft()
                metrics.RAG_SHADOW_RECORDS_DROPPED.inc()
            self._buffer.append(sample)
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self._schedule(self.flush_seconds, self._flush_job)

    def pending(self) -> int:
        with self._lock:
            return len(self._buffer)

    def flush(self) -> int:
        """Write what is buffered now (in this thread); returns how many records were written."""
        with self._lock:
            samples = list(self._buffer)
            self._buffer.clear()
            self._scheduled = False
        if not samples:
            return 0
        try:
            self._writer(samples)
        except Exception:
            metrics.RAG_SHADOW_RECORDS_DROPPED.inc(len(samples))
            self._log_failure(len(samples))
            return 0
        return len(samples)

    def _flush_job(self) -> None:
        try:
            self.flush()
        finally:
            if self._background:
                from django.db import connections

                connections.close_all()  # this thread's connection; the next flush is seconds away

    def _log_failure(self, count: int) -> None:
        if self._error_log.due():
            logger.warning("Could not store %d RAG shadow records; they are dropped", count, exc_info=True)


@process_wide
def get_shadow_recorder() -> ShadowRecorder:
    """The process-wide recorder (its buffer is flushed at exit)."""
    recorder = ShadowRecorder()
    atexit.register(_flush_at_exit, recorder)
    return recorder


def _flush_at_exit(recorder: ShadowRecorder) -> None:
    if recorder.pending():
        recorder.flush()
