"""An offline, deterministic stand-in for a real LLM. It is labelled as simulated everywhere.

* **Text** derives from SHA-256 of the request (prompt, model, temperature, max_tokens,
  system): the same request always gets the same answer, in every process, and any change
  to the request changes it. It starts with ``[simulated <8 hex digits>]``.
* **Tokens** follow the documented estimate of :func:`~cache_app.llm.providers.base.estimate_tokens`
  (~4 characters per token): prompt tokens are estimated from system + prompt, and the text
  is cut to exactly ``4 * n`` characters for ``n`` output tokens, so ``estimate_tokens(text)
  == completion_tokens``. ``n`` is ``SIMULATED_OUTPUT_TOKENS``, or ``max_tokens`` when that is
  lower, in which case ``finish_reason`` is ``length`` (truncated), otherwise ``stop``.
* **Batches**: a combined batch prompt (``cache_app.llm.prompt_format``) gets one answer per
  atom under its ``RESPONSE i [batch <nonce>]:`` marker, each ``n`` tokens, like a model
  that follows the format.
* **Latency** is ``SIMULATED_CALL_OVERHEAD_SECONDS + n * SIMULATED_SECONDS_PER_OUTPUT_TOKEN``
  (defaults 0.3 s + 5 ms/token: ~0.9 s for 120 tokens), spent in an injectable ``sleep``.
* **Streaming** (``stream``): the same text in pieces of ``STREAM_PIECE_TOKENS`` tokens, the
  overhead spent before the first piece and each piece's token time before it is yielded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from cache_app.core import conf, keys
from cache_app.llm.prompt_format import SplitPrompt, response_marker, split_combined_prompt
from cache_app.llm.providers.base import (
    CHARS_PER_TOKEN,
    ProviderRequest,
    ProviderResponse,
    StreamItem,
    estimate_tokens,
)

logger = logging.getLogger(__name__)

# Tokens per streamed piece: small enough to look like a live stream, large enough to stay cheap.
STREAM_PIECE_TOKENS = 4

_WORDS = (
    "the",
    "atom",
    "plan",
    "cache",
    "model",
    "answer",
    "result",
    "token",
    "step",
    "code",
    "test",
    "data",
    "value",
    "task",
    "build",
    "graph",
    "node",
    "edge",
    "check",
    "state",
    "input",
    "output",
    "query",
    "index",
    "vector",
    "batch",
    "layer",
    "price",
    "cost",
    "save",
    "time",
    "run",
    "call",
    "field",
    "record",
    "stream",
    "event",
    "schema",
    "policy",
    "module",
    "function",
    "class",
    "method",
    "error",
    "retry",
    "limit",
    "window",
)


class SimulatedProvider:
    name = "simulated"
    simulated = True

    def __init__(
        self,
        *,
        call_overhead_seconds: float | None = None,
        seconds_per_output_token: float | None = None,
        output_tokens: int | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.call_overhead_seconds = float(
            conf.get("SIMULATED_CALL_OVERHEAD_SECONDS") if call_overhead_seconds is None else call_overhead_seconds
        )
        self.seconds_per_output_token = float(
            conf.get("SIMULATED_SECONDS_PER_OUTPUT_TOKEN")
            if seconds_per_output_token is None
            else seconds_per_output_token
        )
        self.output_tokens = int(conf.get("SIMULATED_OUTPUT_TOKENS") if output_tokens is None else output_tokens)
        self._sleep = sleep
        self.calls = 0
        logger.warning(
            "LLM provider is SIMULATED (offline, deterministic, not a real model): "
            "latency %.3f s + %.4f s/token, %d output tokens",
            self.call_overhead_seconds,
            self.seconds_per_output_token,
            self.output_tokens,
        )

    def latency_seconds(self, output_tokens: int) -> float:
        return self.call_overhead_seconds + output_tokens * self.seconds_per_output_token

    def plan(self, request: ProviderRequest) -> ProviderResponse:
        """The response for ``request``, computed without waiting (pure and deterministic)."""
        seed = hashlib.sha256(keys.canonical_json(request.as_dict()).encode("utf-8")).digest()
        limit = request.max_tokens if request.max_tokens is not None else self.output_tokens
        n = max(1, min(self.output_tokens, limit))
        finish_reason = "length" if limit < self.output_tokens else "stop"
        text = _render(seed, n * CHARS_PER_TOKEN)
        combined = _split_combined(request.prompt)
        if combined is not None:
            # A combined batch prompt: answer every atom under its marker, like a well-behaved model.
            sections = []
            for i, (_, atom_prompt) in enumerate(combined.atoms, start=1):
                atom_seed = hashlib.sha256(seed + atom_prompt.encode("utf-8", "surrogatepass")).digest()
                sections.append(f"{response_marker(i, combined.nonce)}\n{_render(atom_seed, n * CHARS_PER_TOKEN)}")
            text = "\n\n".join(sections)
            n = estimate_tokens(text)
        prompt_tokens = estimate_tokens(request.prompt) + estimate_tokens(request.system)
        return ProviderResponse(
            text=text,
            model=request.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=n,
            finish_reason=finish_reason,
            provider=self.name,
        )

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        response = self.plan(request)
        self.calls += 1
        await self._sleep(self.latency_seconds(response.completion_tokens))
        return response

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamItem]:
        """The text of :meth:`complete` in pieces, with the same total latency, then the response."""
        response = self.plan(request)
        self.calls += 1
        await self._sleep(self.call_overhead_seconds)
        size = STREAM_PIECE_TOKENS * CHARS_PER_TOKEN
        for start in range(0, len(response.text), size):
            piece = response.text[start : start + size]
            await self._sleep(estimate_tokens(piece) * self.seconds_per_output_token)
            yield piece
        yield response


def _split_combined(prompt: str) -> SplitPrompt | None:
    return split_combined_prompt(prompt)


def _render(seed: bytes, length: int) -> str:
    """Exactly ``length`` characters of pseudo-words drawn from SHA-256(seed || counter)."""
    parts = [f"[simulated {seed.hex()[:8]}]"]
    size = len(parts[0])
    counter = 0
    while size < length:
        block = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
        for byte in block:
            word = _WORDS[byte % len(_WORDS)]
            parts.append(word)
            size += 1 + len(word)
            if size >= length:
                break
    text = " ".join(parts)[:length]
    # A trailing space would read as a shorter text; end on a visible character.
    return text[:-1] + "." if text.endswith(" ") else text
