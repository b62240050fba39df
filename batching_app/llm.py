"""Transient LLM errors, and a SIMULATED stand-in for offline runs of the batcher.

Transient provider errors (rate limits, 5xx, timeouts, dropped connections) are what the
Celery wave path retries with backoff; see :data:`TRANSIENT_ERRORS`. :class:`SimulatedLLM`
is an async ``prompt -> text`` callable for the batcher's tests and the batching benchmark
(latency and concurrency limits are knobs): deterministic, labelled "simulated", not an LLM.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cache_app.llm import prompt_format

LLMCall = Callable[[str], Awaitable[str]]


class TransientLLMError(Exception):
    """A provider error worth retrying later (rate limit, 5xx, timeout). Clients may raise subclasses."""


def _sdk_transient_errors() -> tuple[type[BaseException], ...]:
    # The official SDKs' retryable errors, once their own retries are exhausted.
    found: list[type[BaseException]] = []
    for module_name in ("anthropic", "openai"):
        try:
            module = __import__(module_name)
        except ImportError:  # pragma: no cover - both are pinned in requirements.txt
            continue
        for name in ("RateLimitError", "InternalServerError", "APIConnectionError", "APITimeoutError"):
            error = getattr(module, name, None)
            if isinstance(error, type) and issubclass(error, BaseException):
                found.append(error)
    return tuple(found)


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientLLMError,
    TimeoutError,
    ConnectionError,
    *_sdk_transient_errors(),
)


def estimate_tokens(text: str) -> int:
    """Documented estimate used by the simulation: ~4 characters per token (at least 1)."""
    return max(1, math.ceil(len(text) / 4))


def simulated_answer(prompt: str, *, answer_tokens: int = 40) -> str:
    """A deterministic answer derived from a hash of the prompt, about ``answer_tokens`` tokens long."""
    seed = hashlib.sha256(prompt.encode("utf-8", "surrogatepass")).hexdigest()
    words = [f"w{seed[(i * 3) % 60 : (i * 3) % 60 + 3]}" for i in range(max(1, answer_tokens - 3))]
    return f"[simulated {seed[:12]}] " + " ".join(words)


class SimulatedLLM:
    """An offline stand-in for an LLM provider (SIMULATED; never a real model).

    * A plain prompt gets :func:`simulated_answer`.
    * A combined batch prompt (cache_app.llm.prompt_format) gets one ``RESPONSE i [batch n]:``
      section per prompt, like a well-behaved model.
    * Latency: ``overhead_s + per_output_token_s * output_tokens``, so a combined call
      takes longer than a single one. ``max_concurrency`` models a provider limit on
      concurrent requests (None: unlimited).
    """

    def __init__(
        self,
        *,
        overhead_s: float = 0.0,
        per_output_token_s: float = 0.0,
        answer_tokens: int = 40,
        max_concurrency: int | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.overhead_s = overhead_s
        self.per_output_token_s = per_output_token_s
        self.answer_tokens = answer_tokens
        self.max_concurrency = max_concurrency
        self._sleep = sleep
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self.reset()

    def reset(self) -> None:
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cpu_seconds = 0.0  # process time spent producing answers (benchmarks subtract it)

    def respond(self, prompt: str) -> str:
        """The text this simulated model answers, without latency or accounting."""
        split = prompt_format.split_combined_prompt(prompt)
        if split is None:
            return simulated_answer(prompt, answer_tokens=self.answer_tokens)
        return "".join(
            f"{prompt_format.response_marker(i, split.nonce)}\n"
            f"{simulated_answer(text, answer_tokens=self.answer_tokens)}\n\n"
            for i, (_, text) in enumerate(split.atoms, start=1)
        )

    async def __call__(self, prompt: str) -> str:
        started = time.process_time()
        text = self.respond(prompt)
        self.calls += 1
        self.input_tokens += estimate_tokens(prompt)
        output_tokens = estimate_tokens(text)
        self.output_tokens += output_tokens
        self.cpu_seconds += time.process_time() - started
        delay = self.overhead_s + self.per_output_token_s * output_tokens
        if self.max_concurrency is None:
            if delay > 0:
                await self._sleep(delay)
            return text
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.setdefault(loop, asyncio.Semaphore(self.max_concurrency))
        async with semaphore:
            await self._sleep(delay)
        return text
