"""Cache statistics across every process, read from the durable counters in Redis.

The document keeps the original plan's shape exactly (these names are a contract: never
rename or drop them) and adds extra fields next to them::

    {"llm_cache": {"hit_rate", "total_hits", "total_misses", "cost_savings_usd", ...},
     "rag_cache": {"hit_rate", "total_hits", "total_misses", ...},
     "combined_hit_rate": ...,
     "batching": {"avg_batch_size", "total_requests_batched", ...}}

Batching figures are what the provider received: ``batches`` upstream batch calls carrying
``total_requests_batched`` distinct prompts, counted where batches are formed (the
``RequestBatcher``, used in-process and by the Celery wave path).
"""

from __future__ import annotations

from typing import Any

from cache_app.core import conf, keys
from cache_app.core.counters import get_counters
from cache_app.llm.cache import LLMPromptCache
from cache_app.llm.pricing import CostTotals, get_ledger
from cache_app.rag.cache import HIT_FIELDS as RAG_HIT_FIELDS
from cache_app.rag.cache import RAGQueryCache

LAYERS = ("llm", "rag", "batching")


def _rate(hits: float, misses: float) -> float:
    return hits / (hits + misses) if hits + misses else 0.0


def _llm_section(normalized: str | None, costs: CostTotals) -> dict[str, Any]:
    llm = LLMPromptCache().stats(normalized)
    hits, misses = llm.get("hits", 0.0), llm.get("misses", 0.0)
    return {
        "hit_rate": _rate(hits, misses),
        "total_hits": int(hits),
        "total_misses": int(misses),
        "cost_savings_usd": round(costs.saved_by_layer.get("llm", 0.0), 6),
        "writes": int(llm.get("writes", 0)),
        "invalidations": int(llm.get("invalidations", 0)),
    }


def _rag_section(normalized: str | None) -> dict[str, Any]:
    rag = RAGQueryCache().stats(normalized)
    exact, similar = (rag.get(field, 0.0) for field in RAG_HIT_FIELDS)
    misses = rag.get("misses", 0.0)
    return {
        "hit_rate": _rate(exact + similar, misses),
        "total_hits": int(exact + similar),
        "total_misses": int(misses),
        "exact_hits": int(exact),
        "similar_hits": int(similar),
        "writes": int(rag.get("writes", 0)),
        "invalidations": int(rag.get("invalidations", 0)),
    }


def _batching_section(normalized: str | None) -> dict[str, Any]:
    batch = get_counters().read("batch", masterplan_id=normalized)
    batches, batched = batch.get("batches", 0.0), batch.get("requests", 0.0)
    return {
        "avg_batch_size": batched / batches if batches else 0.0,
        "total_requests_batched": int(batched),
        "batches": int(batches),
        "deduplicated": int(batch.get("deduplicated", 0)),
        "parse_fallbacks": int(batch.get("parse_fallbacks", 0)),
        "waves": int(batch.get("waves", 0)),
        "wave_atoms": int(batch.get("wave_atoms", 0)),
    }


def _cost_section(costs: CostTotals) -> dict[str, Any]:
    return {
        "spent_usd": round(costs.spent_usd, 6),
        "saved_usd": round(costs.saved_usd, 6),
        "cost_reduction": costs.cost_reduction,
        "provider_calls": costs.provider_calls,
        "spent_by_model": costs.spent_by_model,
        "saved_by_layer": costs.saved_by_layer,
    }


def cache_statistics(masterplan_id: Any = None) -> dict[str, Any]:
    """The statistics document served by the API and shown in the admin.

    ``masterplan_id`` (a UUID) narrows every figure to one masterplan; ValueError if it is not one.
    """
    normalized = keys.normalize_masterplan_id(masterplan_id)
    costs = get_ledger().totals(masterplan_id=normalized)
    llm = _llm_section(normalized, costs)
    rag = _rag_section(normalized)
    provider = conf.get("LLM_PROVIDER")
    lookups_hit = llm["total_hits"] + rag["total_hits"]
    return {
        "llm_cache": llm,
        "rag_cache": rag,
        "combined_hit_rate": _rate(lookups_hit, llm["total_misses"] + rag["total_misses"]),
        "batching": _batching_section(normalized),
        "masterplan_id": normalized,
        # Spend and savings of the offline simulator are modelled, not billed: say so.
        "llm_provider": provider,
        "llm_provider_simulated": provider == "simulated",
        "cost": _cost_section(costs),
    }


def layer_statistics(layer: str, masterplan_id: Any = None) -> dict[str, Any]:
    """One layer's section of :func:`cache_statistics` (``llm``, ``rag`` or ``batching``).

    Raises ValueError for an unknown layer or a masterplan id that is not a UUID.
    """
    normalized = keys.normalize_masterplan_id(masterplan_id)
    if layer == "llm":
        return _llm_section(normalized, get_ledger().totals(masterplan_id=normalized))
    if layer == "rag":
        return _rag_section(normalized)
    if layer == "batching":
        return _batching_section(normalized)
    raise ValueError(f"layer must be one of {', '.join(LAYERS)}; got {layer!r}")


def masterplan_statistics(masterplan_id: Any) -> dict[str, dict[str, Any]]:
    """One masterplan's figures per layer (``llm``, ``rag``, ``batching``), as :func:`layer_statistics`."""
    return {layer: layer_statistics(layer, masterplan_id) for layer in LAYERS}
