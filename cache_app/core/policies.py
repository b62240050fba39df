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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cache_app.core import conf
from cache_app.core.dbread import RefreshingSnapshot
from cache_app.core.state import process_wide

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerPolicy:
    layer: str
    enabled: bool = True
    ttl_seconds: int = 86400
    similarity_threshold: float = 0.95
    cache_nonzero_temperature: bool = True
    cache_truncated: bool = False
    similarity_guard: bool = True  # RAG: similar hits must pass the hit guard (cache_app.rag.guard)
    similarity_shadow: bool = False  # RAG: similar hits are recorded, and the caller gets a miss


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


class PolicySource(Protocol):
    """What the caches and the batcher read policies from (injected; tests pass a static fake)."""

    def layer(self, name: str) -> LayerPolicy: ...

    def llm(self) -> LayerPolicy: ...

    def rag(self) -> LayerPolicy: ...

    def batch(self) -> BatchSettings: ...

    def invalidate(self) -> None:
        """Forget any copy held in memory; the next read is fresh."""


class DatabasePolicySource:
    """The default PolicySource: CachePolicy/BatchPolicy rows with a short per-process cache.

    ``clock`` is injectable (monotonic seconds) so tests need not sleep.
    """

    def __init__(self, *, refresh_seconds: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._refresh = refresh_seconds
        self._snapshot = RefreshingSnapshot(
            _load_from_db,
            initial=(dict(DEFAULT_LAYERS), DEFAULT_BATCH),
            refresh_seconds=lambda: self.refresh_seconds,
            clock=clock,
            what="policies",
            log=logger,
        )

    @property
    def refresh_seconds(self) -> float:
        return float(conf.get("POLICY_REFRESH_SECONDS") if self._refresh is None else self._refresh)

    def invalidate(self) -> None:
        """Forget the in-memory copy; the next read goes to the database."""
        self._snapshot.invalidate()

    def layer(self, name: str) -> LayerPolicy:
        policy = self._snapshot.get()[0].get(name)
        return policy if policy is not None else DEFAULT_LAYERS.get(name) or LayerPolicy(layer=name)

    def llm(self) -> LayerPolicy:
        return self.layer("llm")

    def rag(self) -> LayerPolicy:
        return self.layer("rag")

    def batch(self) -> BatchSettings:
        return self._snapshot.get()[1]


def _load_from_db() -> tuple[dict[str, LayerPolicy], BatchSettings]:
    # models sit below core (docs/architecture.md); imported here so that core can be imported
    # before Django's app registry is ready.
    from cache_app.models import BatchPolicy, CachePolicy

    layers = dict(DEFAULT_LAYERS)
    for row in CachePolicy.objects.all():
        layers[row.layer] = LayerPolicy(
            layer=row.layer,
            enabled=row.enabled,
            ttl_seconds=row.ttl_seconds,
            similarity_threshold=row.similarity_threshold,
            cache_nonzero_temperature=row.cache_nonzero_temperature,
            cache_truncated=row.cache_truncated,
            similarity_guard=row.similarity_guard,
            similarity_shadow=row.similarity_shadow,
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


@process_wide
def get_policy_source() -> PolicySource:
    """The process-wide PolicySource. Domain objects take one as an injected collaborator."""
    return DatabasePolicySource()
