"""Anthropic Messages API through the official SDK (``AsyncAnthropic().messages.create``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from cache_app.llm.providers.base import (
    PerLoopClients,
    ProviderRequest,
    ProviderResponse,
    StreamItem,
    estimate_tokens,
)


class AnthropicProvider:
    name = "anthropic"
    simulated = False

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float = 60.0,
        default_max_tokens: int = 1024,
        send_temperature: bool = False,
    ) -> None:
        if not api_key:
            raise ImproperlyConfigured("AnthropicProvider needs an API key: set ANTHROPIC_API_KEY.")
        import anthropic  # imported here so the simulated default never loads the SDK

        self.base_url = base_url or None
        self.default_max_tokens = default_max_tokens
        # The current Messages API (and so the SDK) has no sampling parameters: temperature
        # is not sent. It still shapes caching upstream (cache_nonzero_temperature). Set
        # send_temperature for an Anthropic-compatible endpoint that still takes it.
        self.send_temperature = send_temperature
        # 408/409/429/5xx and connection errors are retried by the SDK itself with capped
        # exponential backoff (or the server's retry-after); what is left is raised.
        self._clients = PerLoopClients(
            lambda: anthropic.AsyncAnthropic(
                api_key=api_key, base_url=self.base_url, max_retries=max_retries, timeout=timeout
            )
        )

    def _kwargs(self, request: ProviderRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if self.send_temperature:
            kwargs["extra_body"] = {"temperature": request.temperature}
        if request.system:
            kwargs["system"] = request.system
        return kwargs

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        message = await self._clients.get().messages.create(**self._kwargs(request))
        text = "".join(getattr(block, "text", "") for block in message.content if block.type == "text")
        usage = getattr(message, "usage", None)
        return ProviderResponse(
            text=text,
            model=message.model or request.model,
            prompt_tokens=_prompt_tokens(usage) if usage else estimate_tokens(request.prompt),
            completion_tokens=int(usage.output_tokens) if usage else estimate_tokens(text),
            finish_reason=message.stop_reason,
            provider=self.name,
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamItem]:
        """Text deltas of a streamed Messages call (``stream=True``), then the whole response."""
        events = await self._clients.get().messages.create(**self._kwargs(request), stream=True)
        parts: list[str] = []
        model, prompt_tokens, completion_tokens, stop_reason = request.model, None, None, None
        async for event in events:
            if event.type == "message_start":
                model = event.message.model or model
                prompt_tokens = _prompt_tokens(event.message.usage)
            elif event.type == "content_block_delta" and event.delta.type == "text_delta":
                parts.append(event.delta.text)
                yield event.delta.text
            elif event.type == "message_delta":
                stop_reason = event.delta.stop_reason
                completion_tokens = int(event.usage.output_tokens)
                if getattr(event.usage, "input_tokens", None) is not None:
                    prompt_tokens = _prompt_tokens(event.usage)
        text = "".join(parts)
        yield ProviderResponse(
            text=text,
            model=model,
            prompt_tokens=estimate_tokens(request.prompt) if prompt_tokens is None else prompt_tokens,
            completion_tokens=estimate_tokens(text) if completion_tokens is None else completion_tokens,
            finish_reason=stop_reason,
            provider=self.name,
        )


def _prompt_tokens(usage: Any) -> int:
    # input_tokens excludes tokens written to or read from Anthropic's own prompt cache;
    # all of them were part of the prompt.
    return (
        int(usage.input_tokens or 0)
        + int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
        + int(getattr(usage, "cache_read_input_tokens", 0) or 0)
    )
