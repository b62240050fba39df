"""A per-cache buffer in front of the durable counters, so a hit costs about a microsecond to count.

``DurableCounters.incr`` resolves settings and stats keys on every call; at a hundred
thousand lookups a second that is measurable. The tally adds under a lock and hands the
sums to the durable counters at most every ``push_seconds``, before every read
(``hit_rate``/``stats``) and at interpreter exit (registered after cache_app.counters,
so it runs before the counters' own exit flush).
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from collections.abc import Callable

from .. import keys
from ..counters import DurableCounters

_tallies: weakref.WeakSet[Tally] = weakref.WeakSet()


class Tally:
    push_seconds = 0.25

    def __init__(self, layer: str, counters: Callable[[], DurableCounters]) -> None:
        self._layer = layer
        self._counters = counters
        self._lock = threading.Lock()
        # Keyed by the key prefix in force when counted: the durable counters build their
        # Redis keys when handed the sums, and a sum must land under the prefix it was
        # counted under (the prefix only ever changes between tests).
        self._pending: dict[tuple[str, str, str | None], int] = {}
        self._last_push = time.monotonic()
        _tallies.add(self)

    def incr(self, field: str, masterplan_id: str | None) -> None:
        key = (keys.llm_base(), field, masterplan_id)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + 1
        if time.monotonic() - self._last_push >= self.push_seconds:
            self.push()

    def push(self) -> None:
        """Hand the buffered sums to the durable counters (which flush them to Redis)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._last_push = time.monotonic()
        if not pending:
            return
        current = keys.llm_base()
        counters = self._counters()
        for (base, field, masterplan_id), amount in pending.items():
            if base == current:
                counters.incr(self._layer, field, amount, masterplan_id=masterplan_id)


@atexit.register
def _push_all() -> None:
    for tally in list(_tallies):
        try:
            tally.push()
        except Exception:  # interpreter shutdown: best effort
            pass
