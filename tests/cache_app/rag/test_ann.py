"""The RAG index's approximate mode (int8 IVF, rag/cache/ann.py): recall, exact confirmation, bounds, memory.

Seeded data; nothing here measures time (benchmarks/rag_cache.py does).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from cache_app.rag.cache import RAGIndex, RAGQueryCache, ann
from cache_app.rag.cache.codec import pack_record
from cache_app.rag.cache.index import Horizon, NamespaceIndex
from tests.conftest import StaticPolicies as _StaticPolicies

StaticPolicies = partial(_StaticPolicies, similarity_guard=False)

DIM = 384
THRESHOLD = 0.95
TAG = (0, 0)
FAR_FUTURE = 4e9


def units(n: int, rng: np.random.Generator, dim: int = DIM) -> np.ndarray:
    m = rng.standard_normal((n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def at_cosine(base: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    other = rng.standard_normal(base.shape[0])
    other -= other.dot(base) * base
    other /= np.linalg.norm(other)
    return (cosine * base + np.sqrt(1.0 - cosine**2) * other).astype(np.float32)


def digest(i: int) -> str:
    return f"{i:064x}"


def loaded(vectors: np.ndarray, *, ann_min_entries: int | None, expires: float = FAR_FUTURE) -> NamespaceIndex:
    """A namespace mirror holding ``vectors`` as rows 0..n-1 (fed through the log-loading path)."""
    ns = NamespaceIndex(DIM, max_entries=1_000_000, retention_segments=4, ann_min_entries=ann_min_entries)
    horizon = Horizon(head=0, first=0)
    version, reads = ns.plan(horizon)
    assert reads == [(0, 0)]
    data = b"".join(pack_record(digest(i), expires, *TAG, v) for i, v in enumerate(vectors))
    assert ns.load_segments(version, [(0, 0, data)], now=1.0, horizon=horizon)
    return ns


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261130)


def test_ann_finds_every_near_duplicate_brute_force_finds(rng):
    rows = units(6000, rng)
    exact = loaded(rows, ann_min_entries=None)
    approx = loaded(rows, ann_min_entries=2000)
    assert exact.ann is None
    assert approx.ann is not None
    assert len(approx.ann) == 6000

    targets = rng.integers(0, len(rows), size=400)
    found = owed = 0
    for target, cosine in zip(targets, rng.uniform(0.95, 0.995, size=len(targets)), strict=True):
        query = at_cosine(rows[target], float(cosine), rng)
        want = {c.digest for c in exact.search(query, THRESHOLD, now=2.0, tag=TAG).candidates}
        got = {c.digest for c in approx.search(query, THRESHOLD, now=2.0, tag=TAG).candidates}
        owed += len(want)
        found += len(want & got)
    assert owed >= len(targets)  # every query has its near-duplicate at or above the threshold
    assert found / owed >= 0.99


def test_int8_scores_stay_within_the_margin_of_float32_ones(rng, monkeypatch):
    monkeypatch.setattr(ann, "TRAIN_SAMPLE", 2000)  # rows beyond the sample's ranges are the hard case
    rows = units(20_000, rng)
    ns = loaded(rows, ann_min_entries=2000)
    worst = 0.0
    for target in rng.integers(0, len(rows), size=200):
        query = at_cosine(rows[target], float(rng.uniform(0.9, 0.99)), rng)
        for candidate in ns.search(query, 0.9, now=2.0, tag=TAG).candidates:
            exact = float(rows[int(candidate.digest, 16)] @ query)
            worst = max(worst, abs(candidate.score - exact))
    assert 0 < worst < ann.MARGIN / 2


def test_ann_candidates_map_to_the_right_rows_after_compaction(rng):
    rows = units(3000, rng)
    ns = loaded(rows, ann_min_entries=1000)
    assert ns.ann is not None
    # Kill most of the older rows: the namespace compacts (rows renumbered, faiss ids kept).
    result = ns.search(rows[0], THRESHOLD, now=2.0, tag=TAG)
    ns.drop(result.layout, list(range(0, 2000)))
    assert ns.n == 1000
    assert len(ns.ann) == 1000
    for i in (0, 1999):
        assert ns.search(rows[i], THRESHOLD, now=2.0, tag=TAG).candidates == []
    for i in (2000, 2500, 2999):
        best = ns.search(at_cosine(rows[i], 0.97, rng), THRESHOLD, now=2.0, tag=TAG).candidates[0]
        assert best.digest == digest(i)


def test_ann_skips_expired_and_invalidated_rows(rng):
    rows = units(1500, rng)
    ns = loaded(rows, ann_min_entries=1000, expires=100.0)
    assert ns.search(rows[7], THRESHOLD, now=50.0, tag=TAG).candidates[0].digest == digest(7)
    assert ns.search(rows[7], THRESHOLD, now=50.0, tag=(0, 1)).candidates == []  # another generation
    assert ns.search(rows[7], THRESHOLD, now=150.0, tag=TAG).candidates == []  # expired


def test_ann_rebuild_is_bounded(rng, monkeypatch):
    monkeypatch.setattr(ann, "TRAIN_SAMPLE", 1200)
    monkeypatch.setattr(ann, "ADD_BATCH", 500)
    ns = loaded(units(4000, rng), ann_min_entries=3000)
    assert ns.ann is not None
    assert ns.ann.trained_rows == 1200  # trained on a sample, not on every row
    assert ns.ann.largest_batch == 500  # added in batches
    assert len(ns.ann) == 4000
    assert ns.head.shape[0] == 0  # the float32 matrix is gone
    assert ns.tail.shape[0] == 0


def test_memory_per_entry_at_384_dimensions(rng):
    rows = units(5000, rng)
    brute = loaded(rows, ann_min_entries=None)
    compact = loaded(rows, ann_min_entries=2000)
    per_entry_brute = brute.nbytes() / brute.n
    per_entry_ann = compact.nbytes() / compact.n
    assert per_entry_brute > 4 * DIM  # float32 rows
    assert per_entry_ann <= 800  # the bound at 384 dimensions (int8 rows + metadata + ids)
    assert compact.stats()["ann"]["rows"] == 5000


def test_exact_confirmation_rejects_candidates_below_the_threshold(redis, rng):
    """The int8 search returns rows up to ann.MARGIN below the threshold; Redis's float32 copy decides."""
    index = RAGIndex(ann_min_entries=1000, max_entries=5000, max_total_entries=5000)
    cache = RAGQueryCache(redis, policies=StaticPolicies(similarity_threshold=THRESHOLD), index=index)
    rows = units(1100, rng)
    for i, v in enumerate(rows):
        assert cache.set(f"query {i}", v, [{"i": i}], embedding_model="m", top_k=3)
    target = rows[42]
    below = at_cosine(target, THRESHOLD - ann.MARGIN / 2, rng)
    above = at_cosine(target, THRESHOLD + 0.01, rng)

    assert cache.get("probe above", above, embedding_model="m", top_k=3).query == "query 42"
    ns = next(iter(index._namespaces.values()))
    assert ns.ann is not None
    # The approximate search does offer the row below the threshold as a candidate ...
    candidates = ns.search(below, THRESHOLD, now=cache._clock(), tag=ns.tag).candidates
    assert candidates
    assert candidates[0].score < THRESHOLD
    # ... and the exact confirmation refuses it.
    assert cache.get("probe below", below, embedding_model="m", top_k=3) is None


@pytest.mark.parametrize("value", [0, 10, True, "20000"])
def test_ann_setting_is_validated(settings, value):
    from cache_app.checks import check_rag_ann_settings

    assert check_rag_ann_settings() == []
    settings.MGECACHE = {**settings.MGECACHE, "RAG_INDEX_ANN_MIN_ENTRIES": None}
    assert check_rag_ann_settings() == []
    settings.MGECACHE = {**settings.MGECACHE, "RAG_INDEX_ANN_MIN_ENTRIES": value}
    assert [e.id for e in check_rag_ann_settings()] == ["cache_app.E042"]
