"""From the client's event loop to a WSGI thread: ``generate(on_delta=...)`` read as a plain iterator.

The request runs on the process's client loop (``cache_app.llm.loop.submit``), where
concurrent requests can share a single-flight; each text delta is put on a thread-safe
queue that the WSGI thread drains while it writes the response. If the client goes away
the request still runs to the end, so the answer is cached once complete.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cache_app.llm.client import LLMResponse
from cache_app.llm.loop import submit

_END = object()


class DeltaStream:
    """``start(on_delta)`` is a coroutine function (``LLMClient.generate`` with its arguments bound)."""

    def __init__(
        self,
        start: Callable[[Callable[[str], None]], Coroutine[Any, Any, LLMResponse]],
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._clock = clock
        self._deadline = clock() + timeout
        self._future = submit(self._run(start))

    async def _run(self, start: Callable[[Callable[[str], None]], Coroutine[Any, Any, LLMResponse]]) -> LLMResponse:
        try:
            return await start(self._items.put)
        finally:
            self._items.put(_END)

    def next_delta(self) -> str | None:
        """The next text delta, or None once the request has finished. Raises TimeoutError past the deadline."""
        try:
            item = self._items.get(timeout=max(0.0, self._deadline - self._clock()))
        except queue.Empty:
            self._future.cancel()
            raise TimeoutError("the LLM request did not finish in time") from None
        return None if item is _END else item

    def result(self) -> LLMResponse:
        """The finished request's response (after :meth:`next_delta` returned None), or its exception."""
        return self._future.result(timeout=max(0.0, self._deadline - self._clock()))


def pieces(text: str, size: int = 64) -> list[str]:
    """A cached answer replayed as a stream: consecutive pieces of ``size`` characters."""
    return [text[i : i + size] for i in range(0, len(text), size)]
