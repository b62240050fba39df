"""What an admin invalidation would remove: live entries per masterplan and layer, counted now."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis as redis_lib

from cache_app.console.census import LiveEntryCensus
from cache_app.core import keys

logger = logging.getLogger(__name__)

LAYER_NAMES = {"llm": "LLM prompt cache", "rag": "RAG query cache"}
# The confirmation page lists at most this many masterplans by name (the count covers all).
LISTED = 100


@dataclass(frozen=True)
class Removal:
    """Live entries the invalidation would make unreachable; ``counts`` is None if Redis could not be read."""

    layers: tuple[str, ...]
    rows: list[dict[str, Any]]
    totals: dict[str, int] | None
    complete: bool
    more: int  # masterplans selected beyond the listed ones

    @property
    def layer_names(self) -> list[str]:
        return [LAYER_NAMES[layer] for layer in self.layers]


def count_removal(
    masterplans: Sequence[Any], layers: Sequence[str], *, census: LiveEntryCensus | None = None
) -> Removal:
    """Count the live entries of ``masterplans`` (model instances) in ``layers`` with one SCAN."""
    scopes = {keys.scope(mp.pk): mp for mp in masterplans}
    try:
        result = (census or LiveEntryCensus()).run(scopes)
    except (redis_lib.RedisError, OSError) as exc:
        logger.warning("could not count the entries to invalidate: %s: %s", type(exc).__name__, exc)
        result = None
    rows = []
    for scope, mp in list(scopes.items())[:LISTED]:
        counts = None if result is None else [result.count(layer, scope) for layer in layers]
        rows.append({"masterplan": mp, "counts": counts})
    totals = None if result is None else {layer: sum(result.count(layer, s) for s in scopes) for layer in layers}
    return Removal(
        tuple(layers), rows, totals, complete=result is not None and result.complete, more=max(0, len(scopes) - LISTED)
    )
