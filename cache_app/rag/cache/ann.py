"""The approximate index of a large namespace: int8 vectors in an inverted-file index (faiss).

Above ``MGECACHE['RAG_INDEX_ANN_MIN_ENTRIES']`` rows a namespace drops its float32 matrix
(1.5 KB a row at 384 dimensions) for this: an IVF index whose vectors are scalar-quantised
to one byte per dimension (faiss ``QT_8bit``, inner product). A search scans the
``PROBES`` lists nearest the query out of ``LISTS`` and returns every row whose
*approximate* score reaches the cutoff minus ``MARGIN``; the caller confirms each candidate
exactly, in float32, against the embedding stored in the Redis entry (cache.py reads that
entry anyway to serve it), so quantisation can only add candidates, never a false hit.

Rows are named by a sequence number (``seq``) that never changes, so compacting the
namespace's row arrays does not touch the faiss index: dropped rows are removed by id.

Bounded rebuild: the coarse centroids and the quantiser's ranges are trained on at most
``TRAIN_SAMPLE`` rows (seeded sample), and rows are added in batches of ``ADD_BATCH``.
"""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

# Inverted lists and lists probed per search: 20 of 384 scan about 5% of the rows. Measured on
# random unit rows (isotropic: the hardest case for IVF), near-duplicates at cosine 0.95-0.99,
# share found / search p50: 384 lists probed 16, 20, 24 times: 0.9975 / 0.24 ms, 0.9985 / 0.33,
# 0.9990 / 0.40 at 100k rows and 0.9995 / 1.5 ms, 0.9995 / 1.9, 1.0 / 2.3 at 1M; 192 lists
# probed 16 times: 0.999 / 4.8 ms at 1M.
LISTS = 384
PROBES = 20
# k-means wants ~39 points per centroid; 64 per list keeps training under a second. The
# switch happens at RAG_INDEX_ANN_MIN_ENTRIES rows (20k): all of them train it.
TRAIN_SAMPLE = LISTS * 64
ADD_BATCH = 65_536
# Each dimension's int8 range is the trained sample's min..max widened by this share on both
# sides: rows later added beyond the sample's range would otherwise be clipped (measured on
# 100k random rows: worst score error 0.0076 without widening, 0.0026 with it).
RANGE_SLACK = 0.2
# int8 scores differ from float32 ones by ~6e-4 on average, 0.003 at worst (above); candidates
# down to this far below the cutoff are returned for exact confirmation.
MARGIN = 0.01


class AnnRows:
    """An IVF-SQ8 inner-product index of unit vectors, ids = row sequence numbers."""

    def __init__(self, dim: int, sample: np.ndarray, *, threads: int | None = 1) -> None:
        """Train on ``sample`` (float32 unit rows; at most TRAIN_SAMPLE are used)."""
        if threads is not None:
            faiss.omp_set_num_threads(int(threads))
        if len(sample) > TRAIN_SAMPLE:
            pick = np.random.default_rng(len(sample)).choice(len(sample), TRAIN_SAMPLE, replace=False)
            sample = sample[np.sort(pick)]
        self.dim = dim
        self.trained_rows = len(sample)
        self.largest_batch = 0
        self.lists = max(1, min(LISTS, len(sample) // 39))
        self._quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFScalarQuantizer(
            self._quantizer, dim, self.lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        self.index.sq.rangestat = faiss.ScalarQuantizer.RS_minmax
        self.index.sq.rangestat_arg = RANGE_SLACK
        self.index.train(np.ascontiguousarray(sample, dtype=np.float32))
        self.index.nprobe = min(PROBES, self.lists)

    def add(self, vectors: np.ndarray, seqs: np.ndarray) -> None:
        for start in range(0, len(vectors), ADD_BATCH):
            stop = start + ADD_BATCH
            self.largest_batch = max(self.largest_batch, min(stop, len(vectors)) - start)
            self.index.add_with_ids(
                np.ascontiguousarray(vectors[start:stop], dtype=np.float32),
                np.ascontiguousarray(seqs[start:stop], dtype=np.int64),
            )

    def remove(self, seqs: np.ndarray) -> None:
        if len(seqs):
            # faiss's Python layer wraps an id array into an IDSelectorBatch (its stubs only know the selector).
            self.index.remove_ids(np.ascontiguousarray(seqs, dtype=np.int64))  # type: ignore[arg-type]

    def search(self, unit: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
        """``(seqs, approximate scores)`` of the rows scoring above ``cutoff - MARGIN`` in the probed lists."""
        query = np.ascontiguousarray(unit.reshape(1, -1), dtype=np.float32)
        _, scores, ids = self.index.range_search(query, float(cutoff - MARGIN))
        return ids, scores

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def nbytes(self) -> int:
        """Bytes held: one code and one int64 id per row, plus the centroids and quantiser ranges."""
        per_row = int(self.index.code_size) + 8
        return len(self) * per_row + self.lists * self.dim * 4 + 2 * self.dim * 4

    def describe(self) -> dict[str, Any]:
        return {"lists": self.lists, "probes": int(self.index.nprobe), "rows": len(self)}
