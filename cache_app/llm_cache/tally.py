"""A process-wide buffer in front of the durable counters, so counting a hit costs about a microsecond.

``DurableCounters.incr`` merges settings and builds stats keys on every call (several
microseconds, a tenth of a cache hit). Caches using the process-wide counters add here
instead; the sums are handed to ``get_counters()`` at most every ``PUSH_SECONDS``, before
every ``LLMPromptCache.stats()``/``hit_rate()`` read, and at interpreter exit (registered
after cache_app.counters, so it runs before the counters' own exit flush).

Read LLM counters through ``LLMPromptCache.stats()``/``hit_rate()``: a direct
``get_counters().read("llm")`` may miss the last ``PUSH_SECONDS`` of this process's counts.
"""

from __future__ import annotations

import atexit
import threading
import time

from .. import keys
from ..counters import get_counters

PUSH_SECONDS = 0.25
_lock = threading.Lock()
# Keyed by the key prefix in force when counted: the durable counters build their Redis
# keys when handed the sums, and a sum must land under the prefix it was counted under
# (the prefix only ever changes between tests).
_pending: dict[tuple[str, str, str, str | None], int] = {}
_last_push = time.monotonic()


def count(layer: str, field: str, masterplan_id: str | None) -> None:
    key = (keys.llm_base(), layer, field, masterplan_id)
    with _lock:
        _pending[key] = _pending.get(key, 0) + 1
    if time.monotonic() - _last_push >= PUSH_SECONDS:
        push()


def push() -> None:
    """Hand the buffered sums to the process-wide durable counters (which flush them to Redis)."""
    global _pending, _last_push
    with _lock:
        pending, _pending = _pending, {}
        _last_push = time.monotonic()
    if not pending:
        return
    current = keys.llm_base()
    counters = get_counters()
    for (base, layer, field, masterplan_id), amount in pending.items():
        if base == current:
            counters.incr(layer, field, amount, masterplan_id=masterplan_id)


@atexit.register
def _push_at_exit() -> None:
    try:
        push()
    except Exception:  # interpreter shutdown: best effort
        pass
