"""Reading small, rarely-changing tables (policies, prices) from any context.

The ORM refuses to run inside an event loop (SynchronousOnlyOperation). Async callers
(the LLM client, the batcher) read through one dedicated thread instead; the reads are
small, bounded and rare (at most once per refresh interval per process), so blocking the
loop for one of them is cheaper than ``sync_to_async``'s thread hop on every call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

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
