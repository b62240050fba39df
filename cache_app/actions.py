"""Operator actions, shared by the admin, the API and manage.py (thin callers, one function each).

* :func:`request_invalidation` is *the* invalidation operation: it records an
  ``InvalidationAudit`` row (who, from where, what) and has the work done after commit by the
  ``perform_invalidation`` Celery task (manage.py runs it inline). :func:`perform_invalidation`
  is that work: idempotent, it records what it removed, how long it took and how it ended.
* :func:`update_policy` changes a cache or batch policy with the model's validation rules
  (the admin's) and records a ``PolicyChangeAudit`` row with the old and new values.
* :func:`invalidate_masterplan` / :func:`invalidate_layers` are the bare, unaudited primitives
  (logical and immediate: an O(1) generation bump per layer; deletion handed to Celery).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import redis
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from cache_app.core import keys, metrics
from cache_app.core.counters import get_counters
from cache_app.core.redis_client import get_redis
from cache_app.core.taskopts import send_task
from cache_app.llm.cache import CacheUnavailableError, LLMPromptCache
from cache_app.rag.cache import RAGQueryCache
from cache_app.rag.calibration import CalibrationReport

logger = logging.getLogger(__name__)

LAYERS = ("llm", "rag")
ALL_LAYERS = "all"
MAX_ERROR_CHARS = 2000
# Errors worth another attempt of an invalidation (Redis down or timing out).
# The error of an invalidation whose task could not be sent (the broker was down).
NOT_STARTED = "could not start"
RETRYABLE = (CacheUnavailableError, redis.RedisError, OSError)


def parse_layers(layers: Any) -> tuple[str, ...]:
    """``"all"``, one layer name, or an iterable of names (``"all"`` allowed) -> distinct layers."""
    names = [layers] if isinstance(layers, str) else list(layers)
    chosen: list[str] = []
    for name in names:
        chosen.extend(LAYERS if name == ALL_LAYERS else [name])
    return _check_layers(chosen)


def _check_layers(layers: Any) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(layers))
    unknown = [layer for layer in chosen if layer not in LAYERS]
    if not chosen or unknown:
        raise ValueError(f"layers must be a non-empty subset of {', '.join(LAYERS)}; got {list(layers)!r}")
    return chosen


def _cache(layer: str) -> LLMPromptCache | RAGQueryCache:
    return LLMPromptCache() if layer == "llm" else RAGQueryCache()


def invalidate_masterplan(masterplan_id: Any, *, layers: Any = LAYERS) -> dict[str, int]:
    """Make every cached answer of one masterplan unreachable in the chosen layers (unaudited).

    Returns, per layer, the number of entries deleted inline (0 when deletion was deferred
    to Celery). Raises ValueError for a bad id or layer, and CacheUnavailableError when
    Redis cannot record the invalidation (the caller must tell the operator it failed).
    """
    normalized = keys.normalize_masterplan_id(masterplan_id)
    if normalized is None:
        raise ValueError("masterplan_id is required")
    chosen = _check_layers(layers)
    result = {layer: _cache(layer).invalidate_masterplan(normalized, reclaim="celery") for layer in chosen}
    logger.info("invalidated masterplan %s in %s", normalized, ", ".join(chosen))
    return result


def invalidate_layers(layers: Any = LAYERS) -> dict[str, int]:
    """Make every entry of the chosen layers unreachable (never FLUSHDB: only this app's keys); unaudited."""
    chosen = _check_layers(layers)
    result = {layer: _cache(layer).invalidate_all(reclaim="celery") for layer in chosen}
    logger.info("invalidated cache layers %s", ", ".join(chosen))
    return result


# --- who asked ---------------------------------------------------------------------------------


def _actor(actor: Any) -> tuple[Any, str]:
    """(user row or None, name to record). ``actor``: a user, an API principal, a name, or None."""
    if actor is None:
        return None, ""
    if isinstance(actor, str):
        return None, actor[:150]
    if getattr(actor, "is_authenticated", False) and getattr(actor, "pk", None) is not None:
        from django.contrib.auth import get_user_model

        if isinstance(actor, get_user_model()):
            return actor, actor.get_username()[:150]
    return None, str(actor)[:150]


def _source(source: str) -> str:
    from cache_app.models import AuditSource

    if source not in AuditSource.values:
        raise ValueError(f"source must be one of {', '.join(AuditSource.values)}; got {source!r}")
    return source


# --- invalidation as an audited operation ----------------------------------------------------------


def request_invalidation(
    *,
    source: str,
    masterplan_id: Any = None,
    all_masterplans: bool = False,
    layers: Any = LAYERS,
    actor: Any = None,
    run_inline: bool = False,
    task_options: Mapping[str, Any] | None = None,
) -> Any:
    """Record an invalidation and have it carried out; returns its ``InvalidationAudit`` row.

    Exactly one of ``masterplan_id`` and ``all_masterplans``. ``layers``: names or ``"all"``.
    ``source``: ``api``, ``admin`` or ``cli``. By default the work runs in the
    ``perform_invalidation`` Celery task once the current transaction commits, and the row
    returned is still ``pending``; with ``run_inline`` it runs here and the row returned is
    final. Raises ValueError for bad input.
    """
    from cache_app.masterplans import ensure_masterplan_registered
    from cache_app.models import InvalidationAudit

    chosen = parse_layers(layers)
    normalized = keys.normalize_masterplan_id(masterplan_id)
    if (normalized is None) == (not all_masterplans):
        raise ValueError("give exactly one of masterplan_id and all_masterplans")
    user, name = _actor(actor)
    if normalized is not None:
        ensure_masterplan_registered(normalized)
    audit = InvalidationAudit.objects.create(
        actor=user, actor_name=name, source=_source(source), masterplan_id=normalized, layers=list(chosen)
    )
    logger.info("invalidation %s requested by %s via %s", audit.pk, name or "?", source)
    if run_inline:
        return perform_invalidation(audit.pk)
    transaction.on_commit(partial(_enqueue, str(audit.pk), dict(task_options or {})))
    return audit


def _enqueue(audit_id: str, task_options: dict[str, Any]) -> None:
    from cache_app import tasks
    from cache_app.models import InvalidationAudit

    try:
        send_task(tasks.perform_invalidation, (audit_id,), task_options)
    except Exception as exc:  # broker down: say so on the row instead of leaving it pending forever
        logger.exception("could not enqueue invalidation %s", audit_id)
        InvalidationAudit.objects.filter(pk=audit_id, status=InvalidationAudit.Status.PENDING).update(
            status=InvalidationAudit.Status.FAILED,
            finished_at=timezone.now(),
            error=f"{NOT_STARTED}: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS],
        )


def perform_invalidation(audit_id: Any, *, final: bool = True) -> Any:
    """Carry out a recorded invalidation; idempotent. Returns the row (None if it was deleted).

    A finished row is returned as is (a redelivered task does nothing). Layers already done
    by an earlier attempt are skipped. A Redis failure on the last attempt (``final``) marks
    the row failed; otherwise it is re-raised for the task to retry later.
    """
    from cache_app.models import InvalidationAudit

    Status = InvalidationAudit.Status
    claimed = InvalidationAudit.objects.filter(pk=audit_id, status__in=[Status.PENDING, Status.RUNNING]).update(
        status=Status.RUNNING, attempts=F("attempts") + 1, started_at=timezone.now()
    )
    audit = InvalidationAudit.objects.filter(pk=audit_id).first()
    if not claimed or audit is None:
        return audit  # finished already (a redelivery), or deleted: nothing to do
    started = time.monotonic()
    try:
        for layer in audit.layers:
            if layer not in audit.removed_by_layer:
                audit.removed_by_layer[layer] = _invalidate_layer(layer, audit.masterplan_id)
                audit.save(update_fields=["removed_by_layer"])
    except RETRYABLE as exc:
        audit.error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        if not final:
            audit.save(update_fields=["error"])
            raise
        _finish(audit, Status.FAILED, started)
        return audit
    except Exception as exc:  # a bug: end the row visibly, then let the caller see the error
        audit.error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        _finish(audit, Status.FAILED, started)
        raise
    audit.error = ""
    _finish(audit, Status.SUCCEEDED, started)
    return audit


def _invalidate_layer(layer: str, masterplan_id: Any) -> int:
    """Entries deleted: the generation bump is immediate, the deletion runs here (inline)."""
    cache = _cache(layer)
    if masterplan_id is None:
        return cache.invalidate_all(reclaim="inline")
    return cache.invalidate_masterplan(str(masterplan_id), reclaim="inline")


def _finish(audit: Any, status: str, started: float) -> None:
    audit.status = status
    audit.keys_removed = sum(int(n) for n in audit.removed_by_layer.values())
    audit.finished_at = timezone.now()
    audit.duration_seconds = round(time.monotonic() - started, 6)
    audit.save(update_fields=["status", "keys_removed", "finished_at", "duration_seconds", "error"])
    get_counters().flush()  # the invalidation counts are read by other processes
    metrics.INVALIDATION_OPERATIONS.labels(status, audit.source).inc()
    log = logger.info if status == "succeeded" else logger.error
    log("invalidation %s %s: %d keys removed %s", audit.pk, status, audit.keys_removed, audit.error)


def count_entries(masterplan_id: Any = None, layers: Any = LAYERS) -> dict[str, int]:
    """Cache entries stored per layer for a masterplan (None: every scope), for previews.

    Counts keys with SCAN, so it includes entries already invalidated but not yet deleted.
    """
    normalized = keys.normalize_masterplan_id(masterplan_id)
    client = get_redis()
    counts: dict[str, int] = {}
    for layer in parse_layers(layers):
        if normalized is not None:
            pattern = keys.llm_scope_pattern(normalized) if layer == "llm" else keys.rag_scope_pattern(normalized)
            counts[layer] = sum(1 for _ in client.scan_iter(match=pattern, count=1000))
            continue
        pattern, parse = (
            (keys.llm_layer_pattern(), keys.parse_llm_entry)
            if layer == "llm"
            else (keys.rag_layer_pattern(), keys.parse_rag_entry)
        )
        counts[layer] = sum(1 for key in client.scan_iter(match=pattern, count=1000) if parse(key) is not None)
    return counts


# --- masterplans -----------------------------------------------------------------------------------

MASTERPLAN_FIELDS = ("name", "status")


def update_masterplan(masterplan_id: Any, changes: Mapping[str, Any]) -> Any:
    """Rename a masterplan or set its status; returns the row, or None if there is no such masterplan.

    Raises ValidationError (per field) for an unknown field or a bad value; nothing is saved then.
    """
    from cache_app.models import Masterplan

    unknown = sorted(set(changes) - set(MASTERPLAN_FIELDS))
    if unknown:
        raise ValidationError({name: "Unknown or read-only masterplan field." for name in unknown})
    normalized = keys.normalize_masterplan_id(masterplan_id)
    row = None if normalized is None else Masterplan.objects.filter(pk=normalized).first()
    if row is None or not changes:
        return row
    for field, value in changes.items():
        setattr(row, field, value)
    row.full_clean()
    row.save(update_fields=[*changes, "updated_at"])
    return row


# --- policies --------------------------------------------------------------------------------------

CACHE_POLICY_FIELDS = (
    "enabled",
    "ttl_seconds",
    "similarity_threshold",
    "cache_nonzero_temperature",
    "cache_truncated",
    "similarity_guard",
    "similarity_shadow",
    "notes",
)
BATCH_POLICY_FIELDS = ("enabled", "max_batch_size", "batch_window_ms", "notes")
POLICY_FIELDS = {"llm": CACHE_POLICY_FIELDS, "rag": CACHE_POLICY_FIELDS, "batching": BATCH_POLICY_FIELDS}


@dataclass(frozen=True)
class PolicyUpdate:
    policy: models.Model  # the CachePolicy or BatchPolicy row, as saved
    audit: Any  # the PolicyChangeAudit row; None when nothing changed


def _locked_policy(layer: str) -> tuple[models.Model, bool]:
    """The policy row, locked for this transaction; created with the defaults if missing."""
    from cache_app.core.policies import DEFAULT_BATCH, DEFAULT_LAYERS
    from cache_app.models import BatchPolicy, CachePolicy

    if layer == "batching":
        batch = BatchPolicy.objects.select_for_update().filter(pk=1).first()
        return (batch, False) if batch else (BatchPolicy(pk=1, **_defaults(DEFAULT_BATCH, BATCH_POLICY_FIELDS)), True)
    row = CachePolicy.objects.select_for_update().filter(layer=layer).first()
    if row is not None:
        return row, False
    return CachePolicy(layer=layer, **_defaults(DEFAULT_LAYERS[layer], CACHE_POLICY_FIELDS)), True


def _defaults(values: Any, fields: Iterable[str]) -> dict[str, Any]:
    return {name: getattr(values, name) for name in fields if hasattr(values, name)}


def read_policy(layer: str) -> models.Model:
    """The ``llm``, ``rag`` or ``batching`` policy row; an unsaved row of the defaults if there is none yet."""
    from cache_app.core.policies import DEFAULT_BATCH, DEFAULT_LAYERS
    from cache_app.models import BatchPolicy, CachePolicy

    if layer not in POLICY_FIELDS:
        raise ValueError(f"layer must be one of {', '.join(POLICY_FIELDS)}; got {layer!r}")
    if layer == "batching":
        return BatchPolicy.objects.filter(pk=1).first() or BatchPolicy(
            pk=1, **_defaults(DEFAULT_BATCH, BATCH_POLICY_FIELDS)
        )
    row = CachePolicy.objects.filter(layer=layer).first()
    return row or CachePolicy(layer=layer, **_defaults(DEFAULT_LAYERS[layer], CACHE_POLICY_FIELDS))


def update_policy(layer: str, changes: Mapping[str, Any], *, source: str, actor: Any = None) -> PolicyUpdate:
    """Apply ``changes`` ({field: value}) to the ``llm``, ``rag`` or ``batching`` policy, audited.

    Values are validated and converted by the model's fields and validators (``full_clean``,
    the admin's rules). Raises ValueError for an unknown layer and ValidationError (with
    per-field messages) for unknown fields or bad values; nothing is saved then. A change
    reaches every process within ``POLICY_REFRESH_SECONDS``.
    """
    from cache_app.models import PolicyChangeAudit

    if layer not in POLICY_FIELDS:
        raise ValueError(f"layer must be one of {', '.join(POLICY_FIELDS)}; got {layer!r}")
    unknown = sorted(set(changes) - set(POLICY_FIELDS[layer]))
    if unknown:
        raise ValidationError({name: "Unknown or read-only policy field." for name in unknown})
    user, name = _actor(actor)
    source = _source(source)
    with transaction.atomic():
        row, created = _locked_policy(layer)
        old = {} if created else {field: getattr(row, field) for field in changes}
        for field, value in changes.items():
            setattr(row, field, value)
        row.full_clean()  # converts and validates: raises before anything is written
        new = {field: getattr(row, field) for field in changes}
        changed = [field for field in changes if created or old[field] != new[field]]
        if not changed:
            return PolicyUpdate(row, None)
        row.save()
        audit = PolicyChangeAudit.objects.create(
            actor=user,
            actor_name=name,
            source=source,
            target=layer,
            old_values={field: old[field] for field in changed if field in old},
            new_values={field: new[field] for field in changed},
        )
    logger.info("policy %s changed by %s via %s: %s", layer, name or "?", source, audit.new_values)
    return PolicyUpdate(row, audit)


# --- similarity calibration ------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdChange:
    old: float
    new: float
    guarded: bool  # whether the threshold assumes the hit guard (the policy's similarity_guard)
    audit: Any = None  # the PolicyChangeAudit row (None when the threshold did not change)


def tune_similarity_threshold(report: CalibrationReport, *, source: str, actor: Any = None) -> ThresholdChange:
    """Apply a calibration: set the RAG policy's similarity threshold to the report's recommendation.

    The recommendation matching the policy's ``similarity_guard`` is used; the change goes
    through :func:`update_policy` (validated, audited). Raises ValueError when the report has
    none, or was made with another embedder than the configured one (a threshold only means
    something for the embedder it was measured with).
    """
    from cache_app.rag.embedders import load_embedder

    configured = load_embedder().model_name
    if report.embedding_model != configured:
        raise ValueError(
            f"the calibration used {report.embedding_model} but the configured embedder is {configured}; "
            "calibrate with the configured embedder"
        )
    from cache_app.models import CachePolicy

    with transaction.atomic():
        row, _ = _locked_policy("rag")
        policy = cast(CachePolicy, row)
        threshold = report.recommended_for(guarded=policy.similarity_guard)
        if threshold is None:
            raise ValueError("no candidate threshold had zero false hits: nothing to apply")
        old = policy.similarity_threshold
        update = update_policy("rag", {"similarity_threshold": threshold}, source=source, actor=actor)
    logger.info("calibration applied: %s", _calibration_evidence(report, threshold, policy.similarity_guard))
    return ThresholdChange(old, threshold, policy.similarity_guard, update.audit)


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
