"""Operator actions, shared by the admin, the API and manage.py (thin callers, one function each).

Invalidation is logical and immediate (an O(1) generation bump per layer); the physical
deletion of the dead keys is handed to Celery (in-process on the embedded default), so an
operator's click never waits on a large SCAN.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from cache_app.core import keys
from cache_app.llm.cache import LLMPromptCache
from cache_app.rag.cache import RAGQueryCache
from cache_app.rag.calibration import CalibrationReport

logger = logging.getLogger(__name__)
# Policy changes made by operator actions, one JSON object per line.
audit_logger = logging.getLogger("cache_app.audit")

LAYERS = ("llm", "rag")


def _check_layers(layers: Any) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(layers))
    unknown = [layer for layer in chosen if layer not in LAYERS]
    if not chosen or unknown:
        raise ValueError(f"layers must be a non-empty subset of {', '.join(LAYERS)}; got {list(layers)!r}")
    return chosen


def invalidate_masterplan(masterplan_id: Any, *, layers: Any = LAYERS) -> dict[str, int]:
    """Make every cached answer of one masterplan unreachable in the chosen layers.

    Returns, per layer, the number of entries deleted inline (0 when deletion was deferred
    to Celery). Raises ValueError for a bad id or layer, and CacheUnavailableError when
    Redis cannot record the invalidation (the caller must tell the operator it failed).
    """
    normalized = keys.normalize_masterplan_id(masterplan_id)
    if normalized is None:
        raise ValueError("masterplan_id is required")
    chosen = _check_layers(layers)
    result: dict[str, int] = {}
    if "llm" in chosen:
        result["llm"] = LLMPromptCache().invalidate_masterplan(normalized, reclaim="celery")
    if "rag" in chosen:
        result["rag"] = RAGQueryCache().invalidate_masterplan(normalized, reclaim="celery")
    logger.info("invalidated masterplan %s in %s", normalized, ", ".join(chosen))
    return result


def invalidate_layers(layers: Any = LAYERS) -> dict[str, int]:
    """Make every entry of the chosen layers unreachable (never FLUSHDB: only this app's keys)."""
    chosen = _check_layers(layers)
    result: dict[str, int] = {}
    if "llm" in chosen:
        result["llm"] = LLMPromptCache().invalidate_all(reclaim="celery")
    if "rag" in chosen:
        result["rag"] = RAGQueryCache().invalidate_all(reclaim="celery")
    logger.info("invalidated cache layers %s", ", ".join(chosen))
    return result


@dataclass(frozen=True)
class ThresholdChange:
    old: float
    new: float
    guarded: bool  # whether the threshold assumes the hit guard (the policy's similarity_guard)


def tune_similarity_threshold(report: CalibrationReport, *, actor: str = "", source: str = "") -> ThresholdChange:
    """Apply a calibration: set the RAG policy's similarity threshold to the report's recommendation.

    The recommendation matching the policy's ``similarity_guard`` is used. Raises ValueError
    when the report has none, or was made with another embedder than the configured one (a
    threshold only means something for the embedder it was measured with).
    """
    from cache_app.models import CachePolicy
    from cache_app.rag.embedders import load_embedder

    configured = load_embedder().model_name
    if report.embedding_model != configured:
        raise ValueError(
            f"the calibration used {report.embedding_model} but the configured embedder is {configured}; "
            "calibrate with the configured embedder"
        )
    with transaction.atomic():
        policy, _ = CachePolicy.objects.select_for_update().get_or_create(layer="rag", defaults={"ttl_seconds": 3600})
        threshold = report.recommended_for(guarded=policy.similarity_guard)
        if threshold is None:
            raise ValueError("no candidate threshold had zero false hits: nothing to apply")
        change = ThresholdChange(policy.similarity_threshold, threshold, policy.similarity_guard)
        policy.similarity_threshold = threshold
        policy.save()
        _audit_policy_change(
            "tune_similarity_threshold",
            layer="rag",
            field="similarity_threshold",
            old=change.old,
            new=change.new,
            actor=actor,
            source=source,
            evidence=_calibration_evidence(report, threshold, policy.similarity_guard),
        )
    return change


def _calibration_evidence(report: CalibrationReport, threshold: float, guarded: bool) -> dict[str, Any]:
    result = report.result(threshold, guarded=guarded)
    return {
        "embedding_model": report.embedding_model,
        "pairs": report.pairs,
        "guarded": guarded,
        "false_hits": None if result is None else result.false_hits,
        "near_duplicate_rate": None if result is None else result.near_duplicate_rate,
        "paraphrase_rate": None if result is None else result.paraphrase_rate,
    }


def _audit_policy_change(action: str, **details: Any) -> None:
    """The audit record of a policy change: one structured (JSON) log line.

    Seam: when a policy-change audit model exists, write the row here (same fields).
    """
    audit_logger.info("%s", json.dumps({"action": action, **details}, sort_keys=True, default=str))
