"""LLM providers behind one small async interface (see docs/providers.md).

``get_provider()`` returns the process-wide provider chosen by ``LLM_PROVIDER``:

* ``simulated`` (the embedded default): offline and deterministic, labelled as simulated;
* ``anthropic``: the official ``anthropic`` SDK, ``AsyncAnthropic().messages.create``;
* ``openai``: the official ``openai`` SDK, ``AsyncOpenAI().chat.completions.create``.

Keys and base URLs come from the environment through settings (``ANTHROPIC_API_KEY``,
``ANTHROPIC_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``); retries and timeout from
``MGECACHE['LLM_MAX_RETRIES']`` / ``['LLM_TIMEOUT_SECONDS']`` (env of the same names).
A missing key is an :class:`~django.core.exceptions.ImproperlyConfigured` error, never a
silent fallback to the simulator.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from cache_app.core import conf
from cache_app.core.state import process_wide
from cache_app.llm.providers.anthropic_provider import AnthropicProvider
from cache_app.llm.providers.base import (
    CHARS_PER_TOKEN,
    TRUNCATION_REASONS,
    LLMProvider,
    ProviderRequest,
    ProviderResponse,
    StreamingLLMProvider,
    StreamItem,
    estimate_tokens,
    stream_completion,
)
from cache_app.llm.providers.openai_provider import OpenAIProvider
from cache_app.llm.providers.simulated import SimulatedProvider

__all__ = [
    "CHARS_PER_TOKEN",
    "TRUNCATION_REASONS",
    "AnthropicProvider",
    "LLMProvider",
    "OpenAIProvider",
    "ProviderRequest",
    "ProviderResponse",
    "SimulatedProvider",
    "StreamItem",
    "StreamingLLMProvider",
    "build_provider",
    "estimate_tokens",
    "get_provider",
    "stream_completion",
]


def _config(name: str) -> tuple:
    """Everything that decides how ``name`` is built; a change means a new instance."""
    secrets: tuple[Any, ...]
    if name == "anthropic":
        secrets = (getattr(settings, "ANTHROPIC_API_KEY", ""), getattr(settings, "ANTHROPIC_BASE_URL", ""))
    elif name == "openai":
        secrets = (getattr(settings, "OPENAI_API_KEY", ""), getattr(settings, "OPENAI_BASE_URL", ""))
    elif name == "simulated":
        secrets = (
            conf.get("SIMULATED_CALL_OVERHEAD_SECONDS"),
            conf.get("SIMULATED_SECONDS_PER_OUTPUT_TOKEN"),
            conf.get("SIMULATED_OUTPUT_TOKENS"),
        )
    else:
        raise ImproperlyConfigured(f"Unknown LLM_PROVIDER {name!r}; use one of: {', '.join(conf.LLM_PROVIDERS)}.")
    return (
        name,
        *secrets,
        conf.get("LLM_MAX_RETRIES"),
        conf.get("LLM_TIMEOUT_SECONDS"),
        conf.get("LLM_DEFAULT_MAX_TOKENS"),
    )


def build_provider(name: str | None = None) -> LLMProvider:
    """A new provider for ``name`` (default ``LLM_PROVIDER``), configured from settings."""
    name = name or conf.get("LLM_PROVIDER")
    _config(name)  # validates the name
    retries = int(conf.get("LLM_MAX_RETRIES"))
    timeout = float(conf.get("LLM_TIMEOUT_SECONDS"))
    if name == "anthropic":
        return AnthropicProvider(
            api_key=getattr(settings, "ANTHROPIC_API_KEY", ""),
            base_url=getattr(settings, "ANTHROPIC_BASE_URL", "") or None,
            max_retries=retries,
            timeout=timeout,
            default_max_tokens=int(conf.get("LLM_DEFAULT_MAX_TOKENS")),
        )
    if name == "openai":
        return OpenAIProvider(
            api_key=getattr(settings, "OPENAI_API_KEY", ""),
            base_url=getattr(settings, "OPENAI_BASE_URL", "") or None,
            max_retries=retries,
            timeout=timeout,
        )
    return SimulatedProvider()


class _ProviderSlot:
    """The provider built for one configuration; a changed configuration builds a new one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: tuple[tuple, LLMProvider] | None = None

    def get(self) -> LLMProvider:
        config = _config(conf.get("LLM_PROVIDER"))
        current = self._current
        if current is not None and current[0] == config:
            return current[1]
        with self._lock:
            if self._current is None or self._current[0] != config:
                self._current = (config, build_provider(config[0]))
            return self._current[1]


@process_wide
def _provider_slot() -> _ProviderSlot:
    return _ProviderSlot()


def get_provider() -> LLMProvider:
    """The process-wide provider for the current settings (rebuilt if they change)."""
    return _provider_slot().get()
