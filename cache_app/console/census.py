"""How many live entries each masterplan holds, per cache layer: one SCAN of this app's keys.

An entry is live while it exists and carries its scope's current generation tag (an
invalidated entry is dead at once, even before it is reclaimed). Counting needs a SCAN,
so it is never done on a page view: the minute snapshot task counts every scope and
stores the result (``keys.console_census()``), which the masterplan changelist reads in its
one round trip; the invalidation confirmation counts only the masterplans it will touch.

The same SCAN pass notes which masterplans have cost counters, for the top-savings list.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cache_app.core import conf, keys
from cache_app.core.cluster import scan_pages
from cache_app.core.scripts import TAG_LUA
from cache_app.llm.pricing import COST_LAYER

LAYERS = ("llm", "rag")
SCAN_COUNT = 10_000
BATCH_SIZE = 1_000

# KEYS: epoch, generation of ONE scope, then entries of that scope. Returns how many carry
# the scope's current tag (live). Read-only; mirrors RECLAIM_LUA's tag test.
COUNT_LIVE_LUA = (
    TAG_LUA
    + """local n = string.len(tag)
local live = 0
for i = 3, #KEYS do
  if redis.call('GETRANGE', KEYS[i], 0, n - 1) == tag then live = live + 1 end
end
return live
"""
)

_PARSERS: dict[str, Callable[[Any], str | None]] = {"llm": keys.parse_llm_entry, "rag": keys.parse_rag_entry}
_TAG_KEYS: dict[str, tuple[Callable[[Any], str], Callable[[Any], str]]] = {
    "llm": (keys.llm_epoch, keys.llm_generation),
    "rag": (keys.rag_epoch, keys.rag_generation),
}


@dataclass
class Census:
    """Live entries per (layer, scope); ``complete`` is False when the key bound stopped the SCAN."""

    live: dict[str, dict[str, int]] = field(default_factory=lambda: {layer: {} for layer in LAYERS})
    cost_scopes: set[str] = field(default_factory=set)
    scanned: int = 0
    complete: bool = True
    taken_at: float = 0.0

    def count(self, layer: str, scope: str) -> int:
        return self.live.get(layer, {}).get(scope, 0)

    def total(self, layer: str) -> int:
        return sum(self.live.get(layer, {}).values())


def _scope_arg(scope: str) -> str | None:
    return None if scope == keys.GLOBAL_SCOPE else scope


class LiveEntryCensus:
    """Counts live entries. ``redis`` and ``clock`` are injectable; ``max_keys`` bounds the SCAN."""

    def __init__(
        self, redis: Any = None, *, max_keys: int | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = redis
        self._max_keys = max_keys
        self._clock = clock
        self._script: Any = None

    @property
    def redis(self) -> Any:
        if self._redis is None:
            from cache_app.core.redis_client import get_redis

            self._redis = get_redis()
        return self._redis

    @property
    def max_keys(self) -> int:
        return int(conf.get("CONSOLE_CENSUS_MAX_KEYS") if self._max_keys is None else self._max_keys)

    def run(self, scopes: Iterable[str] | None = None) -> Census:
        """Count every scope, or only ``scopes`` (canonical UUIDs or ``global``). Raises on Redis errors."""
        wanted = None if scopes is None else set(scopes)
        census = Census(taken_at=self._clock())
        pages = scan_pages(self.redis, f"{keys.prefix()}*", min(SCAN_COUNT, self.max_keys))  # every primary
        for page in pages:
            if census.scanned >= self.max_keys:
                census.complete = False
                return census
            census.scanned += len(page)
            self._count_page(census, page, wanted)
        return census

    def _group(self, census: Census, page: list[Any], wanted: set[str] | None) -> dict[tuple[str, str], list[Any]]:
        """Entry keys of the page by (layer, scope); notes masterplans with cost counters on the way."""
        groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for key in page:
            found = next(
                ((layer, scope) for layer, parse in _PARSERS.items() if (scope := parse(key)) is not None), None
            )
            if found is None:
                mp = keys.parse_stats_scope(key, COST_LAYER)
                if mp is not None:
                    census.cost_scopes.add(mp)
            elif wanted is None or found[1] in wanted:
                groups[found].append(key)
        return groups

    def _count_page(self, census: Census, page: list[Any], wanted: set[str] | None) -> None:
        groups = self._group(census, page, wanted)
        if not groups:
            return
        if self._script is None:
            self._script = self.redis.register_script(COUNT_LIVE_LUA)
        pipe = self.redis.pipeline(transaction=False)
        queued: list[tuple[str, str]] = []
        for (layer, scope), entries in groups.items():
            epoch_key, generation_key = _TAG_KEYS[layer]
            tag_keys = [epoch_key(_scope_arg(scope)), generation_key(_scope_arg(scope))]  # the scope's slot
            for start in range(0, len(entries), BATCH_SIZE):
                self._script(keys=[*tag_keys, *entries[start : start + BATCH_SIZE]], client=pipe)
                queued.append((layer, scope))
        for (layer, scope), live in zip(queued, pipe.execute(), strict=True):
            census.live[layer][scope] = census.live[layer].get(scope, 0) + int(live)

    def store(self, census: Census) -> None:
        """Replace the stored counts (read by :func:`cache_app.console.figures.masterplan_figures`)."""
        mapping: dict[str, Any] = {
            f"{layer}:{scope}": count for layer in LAYERS for scope, count in census.live[layer].items()
        }
        mapping["taken_at"] = census.taken_at
        mapping["complete"] = int(census.complete)
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.console_census())
        pipe.hset(keys.console_census(), mapping=mapping)
        pipe.execute()
