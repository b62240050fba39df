import numpy as np
import pytest

from cache_app.llm.cache import LLMPromptCache
from cache_app.rag.cache import RAGQueryCache
from cache_app.tasks import reclaim_dead_keys

pytestmark = pytest.mark.django_db


def test_periodic_sweep_reclaims_what_invalidations_left_behind_in_both_layers(redis):
    # Invalidations that left their cleanup to the periodic sweep.
    llm, rag = LLMPromptCache(), RAGQueryCache()
    for i in range(3):
        llm.set(f"prompt {i}", "m", 0.0, f"answer {i}", prompt_tokens=1, completion_tokens=1)
        rag.set(f"query {i}", np.arange(8) + i + 1.0, [{"i": i}], embedding_model="e", top_k=1)
    llm.invalidate_all(reclaim="none")
    rag.invalidate_all(reclaim="none")
    swept = reclaim_dead_keys.delay().get()
    assert swept == {"llm": 3, "rag": 3}
    assert reclaim_dead_keys.delay().get() == {"llm": 0, "rag": 0}  # idempotent
