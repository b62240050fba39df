"""Rate limits for log lines that a failing dependency would otherwise repeat on every call.

A Redis outage or a broken guard fails every request; one line per interval says so without
flooding the log (the metrics count every occurrence).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class LogInterval:
    """:meth:`due` is True at most once per ``seconds`` (a number, or a callable read at each call,
    so that a setting can change it), by an injectable monotonic ``clock``."""

    def __init__(self, seconds: float | Callable[[], float], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether to log now; if so, the next line is due one interval from now."""
        now = self._clock()
        interval = self._seconds() if callable(self._seconds) else self._seconds
        with self._lock:
            if self._last is not None and now - self._last < interval:
                return False
            self._last = now
            return True
