"""Query embedders for the RAG layer. All share one small interface:

``embed(texts) -> np.ndarray`` (float32, shape ``(len(texts), dim)``, L2-normalised),
plus ``model_name`` and ``dim``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from typing import Protocol

import numpy as np


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
