"""The one accessor every process uses to read the current policies.

A process serves policies from memory for at most ``POLICY_REFRESH_SECONDS`` (2 s by
default), then re-reads the database, so an edit saved in the admin reaches every
gunicorn and Celery process within that bound without a restart. A save in this
process takes effect here at once (see ``cache_app.signals``).

If the database cannot be read, the last good values (or the documented defaults)
are served: a policy read must never take the pipeline down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from . import conf
from .dbread import run_orm

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerPolicy:
    layer: str
    enabled: bool = True
    ttl_seconds: int = 86400
    similarity_threshold: float = 0.95
    cache_nonzero_temperature: bool = True
    cache_truncated: bool = False


@dataclass(frozen=True)
class BatchSettings:
    enabled: bool = True
    max_batch_size: int = 5
    batch_window_ms: int = 500


DEFAULT_LAYERS = {
    "llm": LayerPolicy(layer="llm", ttl_seconds=86400),
    "rag": LayerPolicy(layer="rag", ttl_seconds=3600),
}
DEFAULT_BATCH = BatchSettings()


class PolicySource:
    """Reads CachePolicy/BatchPolicy rows with a short per-process cache.

    ``clock`` is injectable (monotonic seconds) so tests need not sleep.
    """

    def __init__(self, *, refresh_seconds: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._valid_for = 0.0
        self._layers: dict[str, LayerPolicy] = dict(DEFAULT_LAYERS)
        self._batch: BatchSettings = DEFAULT_BATCH

    @property
    def refresh_seconds(self) -> float:
        return float(conf.get("POLICY_REFRESH_SECONDS") if self._refresh is None else self._refresh)

    def invalidate(self) -> None:
        """Forget the in-memory copy; the next read goes to the database."""
        with self._lock:
            self._loaded_at = None

    def _maybe_reload(self) -> None:
        # Hot path (every cache lookup): one clock read and one comparison.
        now = self._clock()
        loaded_at = self._loaded_at
        if loaded_at is not None and now - loaded_at < self._valid_for:
            return
        with self._lock:
            if self._loaded_at is not None and now - self._loaded_at < self._valid_for:
                return
            self._valid_for = self.refresh_seconds
            try:
                self._layers, self._batch = _load_from_db_any_context()
            except Exception:  # database down or not migrated: keep serving what we had
                logger.warning(
                    "Could not read policies from the database; serving the last known values", exc_info=True
                )
            self._loaded_at = now

    def layer(self, name: str) -> LayerPolicy:
        self._maybe_reload()
        policy = self._layers.get(name)
        return policy if policy is not None else DEFAULT_LAYERS.get(name) or LayerPolicy(layer=name)

    def llm(self) -> LayerPolicy:
        return self.layer("llm")

    def rag(self) -> LayerPolicy:
        return self.layer("rag")

    def batch(self) -> BatchSettings:
        self._maybe_reload()
        return self._batch


def _load_from_db_any_context() -> tuple[dict[str, LayerPolicy], BatchSettings]:
    # The ORM refuses to run inside an event loop; async callers (aget, the batcher)
    # read through the shared ORM thread instead (cache_app.dbread).
    return run_orm(_load_from_db)


def _load_from_db() -> tuple[dict[str, LayerPolicy], BatchSettings]:
    from .models import BatchPolicy, CachePolicy

    layers = dict(DEFAULT_LAYERS)
    for row in CachePolicy.objects.all():
        layers[row.layer] = LayerPolicy(
            layer=row.layer,
            enabled=row.enabled,
            ttl_seconds=row.ttl_seconds,
            similarity_threshold=row.similarity_threshold,
            cache_nonzero_temperature=row.cache_nonzero_temperature,
            cache_truncated=row.cache_truncated,
        )
    batch_row = BatchPolicy.objects.filter(pk=1).first()
    batch = (
        BatchSettings(
            enabled=batch_row.enabled,
            max_batch_size=batch_row.max_batch_size,
            batch_window_ms=batch_row.batch_window_ms,
        )
        if batch_row
        else DEFAULT_BATCH
    )
    return layers, batch


_default_source: PolicySource | None = None
_default_lock = threading.Lock()


def get_policy_source() -> PolicySource:
    """The process-wide PolicySource. Domain objects take one as an injected collaborator."""
    global _default_source
    if _default_source is None:
        with _default_lock:
            if _default_source is None:
                _default_source = PolicySource()
    return _default_source
