"""Reading small, rarely-changing tables (policies, prices) from any context.

The ORM refuses to run inside an event loop (SynchronousOnlyOperation). Async callers
(the LLM client, the batcher) read through one dedicated thread instead; the reads are
small, bounded and rare (at most once per refresh interval per process), so blocking the
loop for one of them is cheaper than ``sync_to_async``'s thread hop on every call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
logger = logging.getLogger(__name__)

# One thread, so the async path holds at most one extra database connection per process.
_db_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mgecache-db")


def run_orm(fn: Callable[[], T], *, timeout: float = 5.0) -> T:
    """``fn()`` here when no event loop runs in this thread; otherwise on the ORM thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    return _db_thread.submit(fn).result(timeout=timeout)


async def arun_orm(fn: Callable[[], T]) -> T:
    """``fn()`` on the ORM thread without blocking the running loop."""
    return await asyncio.get_running_loop().run_in_executor(_db_thread, fn)


def close_thread_connections() -> None:
    """Close the ORM thread's database connections (tests call this before the test DB is dropped)."""
    from django.db import connections

    _db_thread.submit(connections.close_all).result(timeout=5)


class RefreshingSnapshot(Generic[T]):
    """A value loaded from the database and served from memory for at most ``refresh_seconds``.

    Reads between reloads are one clock read and a comparison (hot paths call this on every
    request). If a reload fails (database down, not migrated) the last good value, or
    ``initial``, keeps being served. ``invalidate()`` makes the next read reload.
    """

    def __init__(
        self,
        loader: Callable[[], T],
        *,
        initial: T,
        refresh_seconds: Callable[[], float],
        clock: Callable[[], float] = time.monotonic,
        what: str = "data",
        log: logging.Logger | None = None,
    ) -> None:
        self._loader = loader
        self._value = initial
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._what = what
        self._log = log or logger  # the owner's logger, so its name says what failed
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._valid_for = 0.0

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = None

    def get(self) -> T:
        now = self._clock()
        loaded_at = self._loaded_at
        if loaded_at is not None and now - loaded_at < self._valid_for:
            return self._value
        with self._lock:
            if self._loaded_at is None or now - self._loaded_at >= self._valid_for:
                self._valid_for = self._refresh_seconds()
                try:
                    self._value = run_orm(self._loader)
                except Exception:  # keep serving what we had
                    self._log.warning(
                        "Could not read %s from the database; serving the last known values", self._what, exc_info=True
                    )
                self._loaded_at = now
            return self._value
