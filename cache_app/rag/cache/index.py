"""The per-process similarity index: one numpy matrix per namespace, mirrored from a Redis log.

A namespace (embedding model, top_k, scope) has an append-only log in Redis; how a process
follows it (incremental reads, rebuilds, one loader at a time) is mirror.py. This module
holds the rows and searches them.

Below RAG_INDEX_ANN_MIN_ENTRIES rows, search is exact: the first ``k`` dimensions of every row are
scored with one BLAS matrix-vector product; by Cauchy-Schwarz ``score <= head_score +
|row_tail| * |query_tail|``, so only rows whose bound reaches the cutoff are scored in
full. That reads about a sixth of the matrix instead of all of it (the search is memory-bound)
and never misses a row that could pass. Liveness (local expiry, generation) is checked
on the few candidates only; a candidate is still confirmed against Redis before it is
returned (cache.py), so the index may be stale but never produces a false hit.

Memory per row: 4 * dim (vector) + 4 (tail norm) + 8 (expiry) + 16 (generation tag) +
32 (digest) + 8 (sequence number) + 1 (alive) bytes, i.e. 1 605 bytes at 384 dimensions,
plus up to 1/8 slack before a compaction. Above RAG_INDEX_ANN_MIN_ENTRIES rows a namespace
switches to an approximate int8 index (ann.py): dim + 8 bytes of vector and id per row
instead of 4 * dim + 4, i.e. 457 bytes a row at 384 dimensions; candidates are then
confirmed exactly in float32 against the Redis entry (cache.py), as every candidate is.
Bounds: RAG_INDEX_MAX_ENTRIES per namespace (the oldest rows go
first), RAG_INDEX_MAX_TOTAL_ENTRIES per process (least recently used namespaces go first).
"""

from __future__ import annotations

import functools
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from cache_app.core import conf, metrics
from cache_app.core.lru import LRU
from cache_app.core.state import process_wide
from cache_app.rag.cache import ann
from cache_app.rag.cache.codec import record_dtype
from cache_app.rag.cache.mirror import Horizon, LogMirror, Position

__all__ = ["Candidate", "Horizon", "NamespaceIndex", "Position", "RAGIndex", "SearchResult", "get_rag_index"]

# Scores within this distance count as a tie (the newest row wins); float32 dot products
# of identical rows can differ in the last bit depending on their position in the matrix.
TIE_EPSILON = 1e-6
# Scores at or above this are always computed exactly (for the score histogram), even
# when the policy threshold is higher; below it only an upper bound is known. Lower
# floors prune less (every row whose bound reaches the floor is scored in full).
SCORE_FLOOR = 0.9
# Above this share of surviving rows, the second pass multiplies the whole tail matrix
# instead of gathering rows (a gather copies; a dense product streams).
DENSE_SECOND_PASS = 0.25


def head_dims(dim: int) -> int:
    """How many leading dimensions the first pass reads: a sixth (64 of 384); all of small vectors."""
    if dim < 96:
        return dim
    return max(16, (dim // 6) // 16 * 16)


@dataclass(frozen=True)
class Candidate:
    row: int
    digest: str
    score: float


@dataclass(frozen=True)
class SearchResult:
    candidates: list[Candidate]  # live rows scoring >= threshold, best first (ties: newest first)
    best_score: float | None  # best exact score, or an upper bound when nothing came near
    layout: int  # pass back to drop() so a compaction in between is detected


class NamespaceIndex(LogMirror):
    """The rows of one namespace. All methods take ``self.lock`` themselves."""

    def __init__(
        self, dim: int, *, max_entries: int, retention_segments: int, ann_min_entries: int | None = None
    ) -> None:
        self.dim = dim
        # Rows from which the namespace searches an approximate int8 index (None: never).
        self.ann_min_entries = ann_min_entries
        self.ann: ann.AnnRows | None = None
        self._seq = 0  # sequence number of the next row (the ANN index's id for it)
        self.k = head_dims(dim)
        self.dtype = record_dtype(dim)
        self.max_entries = max_entries
        self.retention_segments = retention_segments
        self.lock = threading.Lock()
        self.version = 0  # bumped when the mirror restarts from scratch
        self.layout = 0  # bumped when rows are renumbered (compaction)
        self.segment: int | None = None  # None: not loaded yet
        self.offset = 0
        # True once every record of ``segment`` is held (it was read after the head moved
        # past it). Only then may the mirror move on to the next segment: moving on from a
        # segment read halfway would skip the records appended to it since.
        self.sealed = False
        self.log_first: int | None = None  # the log's first segment when loaded: identifies the log
        self.tag = (0, 0)  # the scope's (epoch, generation) as last seen in Redis
        self._readings = 0  # lookups that took a position (see observe_tag)
        self._tag_seen = 0  # readings issued when ``tag`` was seen: any later one must find it or newer
        self.n = 0
        self.dead = 0
        self._loader: object | None = None
        self._loader_until = 0.0
        self._alloc(0)

    # --- storage ---------------------------------------------------------------------------
    def _alloc(self, cap: int) -> None:
        self.cap = cap
        vectors = cap if self.ann is None else 0  # with an ANN index the vectors live there (int8)
        self.head = np.empty((vectors, self.k), dtype=np.float32)
        self.tail = np.empty((vectors, self.dim - self.k), dtype=np.float32)
        self.tail_norm = np.empty(vectors, dtype=np.float32)
        self.seq = np.empty(cap, dtype=np.int64)
        self.expires = np.empty(cap, dtype=np.float64)
        self.epoch = np.empty(cap, dtype=np.int64)
        self.gen = np.empty(cap, dtype=np.int64)
        self.digest = np.empty((cap, 32), dtype=np.uint8)
        self.alive = np.empty(cap, dtype=bool)

    _VECTOR_FIELDS = ("head", "tail", "tail_norm")
    _FIELDS = (*_VECTOR_FIELDS, "seq", "expires", "epoch", "gen", "digest", "alive")

    def _keep(self, rows: np.ndarray, cap: int) -> None:
        """Keep only ``rows`` (in order), in arrays of capacity ``cap``."""
        old = {name: getattr(self, name) for name in self._FIELDS}
        if self.ann is not None:
            dropped = np.ones(self.n, dtype=bool)
            dropped[rows] = False
            self.ann.remove(old["seq"][: self.n][dropped])
        self._alloc(cap)
        m = len(rows)
        for name in self._FIELDS:
            if self.ann is None or name not in self._VECTOR_FIELDS:
                getattr(self, name)[:m] = old[name][rows]
        metrics.RAG_INDEX_ENTRIES.dec(self.n - m)
        self.n, self.dead = m, 0
        self.layout += 1

    def _limit(self) -> int:
        return self.max_entries + max(64, self.max_entries // 8)

    def _make_room(self, incoming: int, now: float) -> None:
        """Grow or compact so that ``incoming`` more rows fit (incoming <= max_entries)."""
        if self.n + incoming <= self.cap:
            return
        live = np.flatnonzero(self.alive[: self.n] & (self.expires[: self.n] > now))
        room = max(0, self.max_entries - incoming)
        live = live[max(0, len(live) - room) :]  # over the bound: the oldest rows go first
        # Capacity grows by half up to max_entries + 1/8 slack, so trimming is amortised.
        self._keep(live, min(self._limit(), max(len(live) + incoming, 1024, int(self.cap * 1.5))))

    def _append(self, data: bytes, now: float) -> None:
        records = np.frombuffer(data, dtype=self.dtype)
        if len(records) > self.max_entries:
            records = records[len(records) - self.max_entries :]
        m = len(records)
        if m == 0:
            return
        self._make_room(m, now)
        start, stop = self.n, self.n + m
        vectors = records["vec"]
        self.seq[start:stop] = np.arange(self._seq, self._seq + m, dtype=np.int64)
        self._seq += m
        if self.ann is not None:
            self.ann.add(vectors, self.seq[start:stop])
        else:
            self.head[start:stop] = vectors[:, : self.k]
            self.tail[start:stop] = vectors[:, self.k :]
            self.tail_norm[start:stop] = np.linalg.norm(self.tail[start:stop], axis=1) if self.k < self.dim else 0.0
        self.expires[start:stop] = records["expires"]
        self.epoch[start:stop] = records["epoch"]
        self.gen[start:stop] = records["gen"]
        self.digest[start:stop] = np.frombuffer(records["digest"].tobytes(), dtype=np.uint8).reshape(m, 32)
        alive = (self.epoch[start:stop] >= self.tag[0]) & (self.gen[start:stop] >= self.tag[1])
        self.alive[start:stop] = alive
        self.dead += int(m - alive.sum())
        self.n = stop
        metrics.RAG_INDEX_ENTRIES.inc(m)
        if self.ann is None and self.ann_min_entries is not None and self.n - self.dead >= self.ann_min_entries:
            self._build_ann(now)

    def _build_ann(self, now: float) -> None:
        """Move the live rows' vectors into an int8 ANN index and free the float32 matrix.

        Bounded: training reads a sample of at most ann.TRAIN_SAMPLE rows; rows are added in
        batches. The namespace stays approximate until the mirror restarts (no flapping).
        """
        live = np.flatnonzero(self.alive[: self.n] & (self.expires[: self.n] > now))
        self._keep(live, self.cap)
        vectors = np.concatenate([self.head[: self.n], self.tail[: self.n]], axis=1)
        index = ann.AnnRows(self.dim, vectors, threads=conf.get("RAG_INDEX_BLAS_THREADS"))
        index.add(vectors, self.seq[: self.n])
        self.ann = index
        self._keep(np.arange(self.n), self.cap)  # reallocates without the float32 vectors

    def _reset(self) -> None:
        metrics.RAG_INDEX_ENTRIES.dec(self.n)
        self.ann = None
        self._alloc(0)
        self.n = self.dead = 0
        self.segment, self.offset, self.sealed, self.log_first = None, 0, False, None
        self.version += 1
        self.layout += 1

    def reset(self) -> None:
        with self.lock:
            self._reset()

    # --- search ------------------------------------------------------------------------------
    def observe_tag(self, epoch: int, gen: int, reading: int) -> None:
        """Follow the scope's (epoch, generation) as read by the lookup that took position ``reading``.

        A newer tag kills the rows written under older ones, for good. A lower tag means one
        of two things. Requested before the current tag was seen, it is only an older
        reading than another caller's: ignored. Requested after, Redis lost its counters
        (restarted empty, or a failover lost increments): the mirror restarts under the
        lower tag, so rows written from now on are alive again.
        """
        with self.lock:
            old_epoch, old_gen = self.tag
            if epoch == old_epoch and gen == old_gen:
                return
            if epoch < old_epoch or gen < old_gen:
                if reading > self._tag_seen:
                    self._reset()
                    self.tag, self._tag_seen = (epoch, gen), self._readings
                return
            self.tag, self._tag_seen = (epoch, gen), self._readings
            n = self.n
            stale = self.alive[:n] & ((self.epoch[:n] < epoch) | (self.gen[:n] < gen))
            count = int(stale.sum())
            if count:
                self.alive[:n][stale] = False
                self.dead += count
                self._maybe_compact(time.time())

    def _maybe_compact(self, now: float) -> None:
        if self.dead > max(1024, self.n // 4):
            self._keep(np.flatnonzero(self.alive[: self.n] & (self.expires[: self.n] > now)), self.cap)

    def search(self, unit: np.ndarray, threshold: float, *, now: float, tag: tuple[int, int]) -> SearchResult:
        with self.lock:
            n = self.n
            if n == 0:
                return SearchResult([], None, self.layout)
            if self.ann is not None:
                return self._search_ann(self.ann, unit, threshold, now, tag)
            k = self.k
            first = self.head[:n] @ unit[:k]
            if k < self.dim:
                tail_q = unit[k:]
                bound = first + self.tail_norm[:n] * np.float32(np.linalg.norm(tail_q))
            else:
                tail_q, bound = None, first
            cutoff = min(threshold, SCORE_FLOOR) - 1e-5  # slack for float32 rounding in the bound
            rows = np.flatnonzero(bound >= cutoff)
            if len(rows):
                expired = rows[self.alive[rows] & (self.expires[rows] <= now)]
                if len(expired):
                    self.alive[expired] = False
                    self.dead += len(expired)
                rows = rows[self.alive[rows] & (self.epoch[rows] == tag[0]) & (self.gen[rows] == tag[1])]
            if len(rows) == 0:
                return SearchResult([], min(float(bound.max()), cutoff), self.layout)
            if tail_q is None:
                scores = first[rows]
            elif len(rows) > DENSE_SECOND_PASS * n:
                scores = first[rows] + (self.tail[:n] @ tail_q)[rows]
            else:
                scores = first[rows] + self.tail[rows] @ tail_q
            passing = scores >= threshold
            return self._result(rows[passing], scores[passing], float(scores.max()))

    def _result(self, rows: np.ndarray, scores: np.ndarray, best: float) -> SearchResult:
        # Best first. Scores within TIE_EPSILON of the best are a tie: newest (highest) row first.
        tied = scores >= best - TIE_EPSILON
        order = np.concatenate(
            [np.flatnonzero(tied)[np.argsort(-rows[tied])], np.flatnonzero(~tied)[np.argsort(-scores[~tied])]]
        )
        digests = self.digest[rows[order]]
        candidates = [
            Candidate(int(row), digests[i].tobytes().hex(), float(score))
            for i, (row, score) in enumerate(zip(rows[order], scores[order], strict=True))
        ]
        return SearchResult(candidates, best, self.layout)

    def _search_ann(
        self, index: ann.AnnRows, unit: np.ndarray, threshold: float, now: float, tag: tuple[int, int]
    ) -> SearchResult:
        """Candidates from the int8 index: approximate scores down to ``threshold - ann.MARGIN``.

        Every candidate is confirmed exactly against its Redis entry's float32 embedding
        before it is served (cache.py), so the margin can only add candidates, not hits.
        """
        cutoff = min(threshold, SCORE_FLOOR)
        seqs, scores = index.search(unit, cutoff)
        if len(seqs) == 0:
            return SearchResult([], cutoff - ann.MARGIN, self.layout)
        rows = np.searchsorted(self.seq[: self.n], seqs)  # seqs grow with rows, compaction keeps the order
        rows = np.minimum(rows, self.n - 1)
        known = self.seq[rows] == seqs
        rows, scores = rows[known], scores[known]
        expired = rows[self.alive[rows] & (self.expires[rows] <= now)]
        if len(expired):
            self.alive[expired] = False
            self.dead += len(expired)
        live = self.alive[rows] & (self.epoch[rows] == tag[0]) & (self.gen[rows] == tag[1])
        rows, scores = rows[live], scores[live]
        if len(rows) == 0:
            return SearchResult([], cutoff - ann.MARGIN, self.layout)
        best = float(scores.max())
        passing = scores >= threshold - ann.MARGIN
        return self._result(rows[passing], scores[passing].astype(np.float32), best)

    def nbytes(self) -> int:
        """Bytes this namespace holds in the process: its row arrays and its ANN index, if any."""
        with self.lock:
            arrays = sum(getattr(self, name).nbytes for name in self._FIELDS)
            return arrays + (self.ann.nbytes() if self.ann is not None else 0)

    def drop(self, layout: int, rows: list[int]) -> None:
        """Forget rows whose entry turned out dead in Redis (expired, invalidated, deleted)."""
        with self.lock:
            if layout != self.layout or not rows:
                return
            index = np.asarray(rows, dtype=np.int64)
            index = index[self.alive[index]]
            self.alive[index] = False
            self.dead += len(index)
            self._maybe_compact(time.time())

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "rows": self.n,
                "dead": self.dead,
                "capacity": self.cap,
                "segment": self.segment,
                "ann": None if self.ann is None else self.ann.describe(),
            }


@functools.cache
def configure_blas() -> None:
    """Apply RAG_INDEX_BLAS_THREADS once per process (see conf.py for why one thread is the default)."""
    threads = conf.get("RAG_INDEX_BLAS_THREADS")
    if threads is None:
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a pinned runtime dependency
        return
    threadpool_limits(limits=int(threads), user_api="blas")


class RAGIndex:
    """Namespace indexes of one process, least recently used first out beyond the row budget."""

    def __init__(
        self,
        *,
        max_entries: int | None = None,
        max_total_entries: int | None = None,
        ann_min_entries: int | None = None,
    ) -> None:
        configure_blas()
        self._max_entries = max_entries
        self._ann_min = ann_min_entries
        self._max_total = max_total_entries
        self._lock = threading.Lock()
        # Unbounded by count: enforce_budget evicts by rows held, not by namespaces.
        self._namespaces: LRU[str, NamespaceIndex] = LRU()

    @property
    def max_entries(self) -> int:
        return int(conf.get("RAG_INDEX_MAX_ENTRIES") if self._max_entries is None else self._max_entries)

    @property
    def ann_min_entries(self) -> int | None:
        value = conf.get("RAG_INDEX_ANN_MIN_ENTRIES") if self._ann_min is None else self._ann_min
        return None if value is None else int(value)

    @property
    def max_total_entries(self) -> int:
        return int(conf.get("RAG_INDEX_MAX_TOTAL_ENTRIES") if self._max_total is None else self._max_total)

    def retention_segments(self, dim: int) -> int:
        """How many log segments hold max_entries records (+2: the open one and a partial one)."""
        per_segment = max(1, int(conf.get("RAG_LOG_SEGMENT_BYTES")) // record_dtype(dim).itemsize)
        return math.ceil(self.max_entries / per_segment) + 2

    def namespace(self, log_base: str, dim: int) -> NamespaceIndex:
        with self._lock:
            index = self._namespaces.get(log_base)
            if index is None:
                index = NamespaceIndex(
                    dim,
                    max_entries=self.max_entries,
                    retention_segments=self.retention_segments(dim),
                    ann_min_entries=self.ann_min_entries,
                )
                self._namespaces.put(log_base, index)
            return index

    def enforce_budget(self) -> None:
        """Drop least recently used namespaces while the process holds more rows than allowed."""
        with self._lock:
            total = sum(ns.n for ns in self._namespaces.values())
            while total > self.max_total_entries and len(self._namespaces) > 1:
                _, oldest = self._namespaces.popoldest()
                total -= oldest.n
                oldest.reset()

    def clear(self) -> None:
        with self._lock:
            for ns in self._namespaces.values():
                ns.reset()
            self._namespaces.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(ns.n for ns in self._namespaces.values())


@process_wide
def get_rag_index() -> RAGIndex:
    """The process-wide index shared by every RAGQueryCache that is not given its own."""
    return RAGIndex()
