"""The process's client loop: where synchronous callers (WSGI views, Celery tasks, shells) run
the LLM client's coroutines.

Concurrent requests from many threads meet on this one loop, so the batcher can combine them and
single-flight can merge them; a fresh loop per request could do neither. It is a thread, not
process state in the sense of ``cache_app.core.state``: it is never reset.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _BackgroundLoop:
    """One event loop per process, in a daemon thread, started on first use (see the module docstring)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            with self._lock:
                if self._loop is None:
                    loop = asyncio.new_event_loop()
                    threading.Thread(target=loop.run_forever, name="mgecache-client-loop", daemon=True).start()
                    self._loop = loop
        return self._loop


_background = _BackgroundLoop()


def submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    """Start ``coro`` on the process's client loop without waiting (from synchronous code)."""
    return asyncio.run_coroutine_threadsafe(coro, _background.loop())


def run_sync(coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
    """Run ``coro`` on the process's client loop and wait for it (from synchronous code)."""
    future = asyncio.run_coroutine_threadsafe(coro, _background.loop())
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError("the LLM request did not finish in time") from None
