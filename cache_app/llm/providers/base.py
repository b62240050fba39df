"""The provider interface: one async call, one request in, one normalised response out."""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

# Raw stop reasons that mean "cut off by max_tokens": Anthropic says max_tokens, OpenAI length.
TRUNCATION_REASONS = frozenset({"max_tokens", "length"})

# The documented token estimate used where no tokenizer is at hand (the simulated provider,
# and a real provider whose response carries no usage): about 4 characters of English per
# token, the rule of thumb both vendors publish. Good to ~10-20% for prose, worse for code.
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str | None) -> int:
    """ceil(len(text) / 4); 0 for empty text."""
    if not text:
        return 0
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class ProviderRequest:
    prompt: str
    model: str
    temperature: float = 0.7
    max_tokens: int | None = None
    system: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ProviderResponse:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    # The provider's raw value (end_turn, max_tokens, stop, length, ...), kept as is.
    finish_reason: str | None
    provider: str = ""

    @property
    def truncated(self) -> bool:
        """True when the answer was cut off by max_tokens (whatever the provider calls it)."""
        return self.finish_reason in TRUNCATION_REASONS

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "truncated": self.truncated}


@runtime_checkable
class LLMProvider(Protocol):
    name: str
    # True only for the offline stand-in; shown wherever results are reported.
    simulated: bool

    async def complete(self, request: ProviderRequest) -> ProviderResponse: ...


# What a stream yields: text deltas (str), then the complete ProviderResponse, last.
StreamItem = str | ProviderResponse


@runtime_checkable
class StreamingLLMProvider(LLMProvider, Protocol):
    """A provider that can also stream: ``stream(request)`` yields text deltas, then the full response."""

    def stream(self, request: ProviderRequest) -> AsyncIterator[StreamItem]: ...


async def stream_completion(provider: LLMProvider, request: ProviderRequest) -> AsyncIterator[StreamItem]:
    """The provider's own stream if it has one, else its ``complete`` as a single delta.

    The deltas always add up to the final response's text.
    """
    if isinstance(provider, StreamingLLMProvider):
        async for item in provider.stream(request):
            yield item
        return
    response = await provider.complete(request)
    if response.text:
        yield response.text
    yield response


C = TypeVar("C")


class PerLoopClients(Generic[C]):
    """One SDK client per event loop.

    The SDKs' async HTTP connection pools are bound to the loop that opened them; a
    provider shared by code that calls ``asyncio.run`` more than once (a sync wrapper,
    a Celery task) would otherwise reuse a connection of a closed loop.
    """

    def __init__(self, factory: Callable[[], C]) -> None:
        self._factory = factory
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, C] = weakref.WeakKeyDictionary()

    def get(self) -> C:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._factory()
            self._clients[loop] = client
        return client
