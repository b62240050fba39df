"""Cache statistics across every process, read from the durable counters in Redis."""

from __future__ import annotations

from typing import Any

from cache_app.core import conf, keys
from cache_app.core.counters import get_counters
from cache_app.llm.cache import LLMPromptCache
from cache_app.llm.pricing import get_ledger
from cache_app.rag.cache import HIT_FIELDS as RAG_HIT_FIELDS
from cache_app.rag.cache import RAGQueryCache


def _rate(hits: float, misses: float) -> float:
    return hits / (hits + misses) if hits + misses else 0.0


def cache_statistics(masterplan_id: Any = None) -> dict[str, Any]:
    """The statistics document served by the API and shown in the admin.

    ``masterplan_id`` (a UUID) narrows every figure to one masterplan.
    """
    normalized = keys.normalize_masterplan_id(masterplan_id)
    llm = LLMPromptCache().stats(normalized)
    rag = RAGQueryCache().stats(normalized)
    costs = get_ledger().totals(masterplan_id=normalized)
    batch = get_counters().read("batch", masterplan_id=normalized)

    llm_hits, llm_misses = llm.get("hits", 0.0), llm.get("misses", 0.0)
    rag_exact, rag_similar = (rag.get(field, 0.0) for field in RAG_HIT_FIELDS)
    rag_hits, rag_misses = rag_exact + rag_similar, rag.get("misses", 0.0)
    batches, batched = batch.get("batches", 0.0), batch.get("requests", 0.0)
    provider = conf.get("LLM_PROVIDER")
    return {
        "masterplan_id": normalized,
        # Spend and savings of the offline simulator are modelled, not billed: say so.
        "llm_provider": provider,
        "llm_provider_simulated": provider == "simulated",
        "llm_cache": {
            "hit_rate": _rate(llm_hits, llm_misses),
            "total_hits": int(llm_hits),
            "total_misses": int(llm_misses),
            "writes": int(llm.get("writes", 0)),
            "invalidations": int(llm.get("invalidations", 0)),
            "cost_savings_usd": round(costs.saved_by_layer.get("llm", 0.0), 6),
        },
        "rag_cache": {
            "hit_rate": _rate(rag_hits, rag_misses),
            "total_hits": int(rag_hits),
            "exact_hits": int(rag_exact),
            "similar_hits": int(rag_similar),
            "total_misses": int(rag_misses),
            "writes": int(rag.get("writes", 0)),
            "invalidations": int(rag.get("invalidations", 0)),
        },
        "combined_hit_rate": _rate(llm_hits + rag_hits, llm_misses + rag_misses),
        "cost": {
            "spent_usd": round(costs.spent_usd, 6),
            "saved_usd": round(costs.saved_usd, 6),
            "cost_reduction": costs.cost_reduction,
            "spent_by_model": costs.spent_by_model,
            "saved_by_layer": costs.saved_by_layer,
        },
        "batching": {
            "batches": int(batches),
            "total_requests_batched": int(batched),
            "avg_batch_size": batched / batches if batches else 0.0,
            "parse_fallbacks": int(batch.get("parse_fallbacks", 0)),
        },
    }
