"""OpenAI Chat Completions through the official SDK (``AsyncOpenAI().chat.completions.create``)."""

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


class OpenAIProvider:
    name = "openai"
    simulated = False

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float = 60.0,
    ) -> None:
        if not api_key:
            raise ImproperlyConfigured("OpenAIProvider needs an API key: set OPENAI_API_KEY.")
        import openai  # imported here so the simulated default never loads the SDK

        self.base_url = base_url or None
        # Retries (408/409/429/5xx, connection errors) with capped backoff are the SDK's own.
        self._clients = PerLoopClients(
            lambda: openai.AsyncOpenAI(
                api_key=api_key, base_url=self.base_url, max_retries=max_retries, timeout=timeout
            )
        )

    @staticmethod
    def _kwargs(request: ProviderRequest) -> dict[str, Any]:
        messages: list[dict[str, str]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        kwargs: dict[str, Any] = {"model": request.model, "messages": messages, "temperature": request.temperature}
        if request.max_tokens is not None:
            # max_completion_tokens supersedes the deprecated max_tokens on every current model.
            kwargs["max_completion_tokens"] = request.max_tokens
        return kwargs

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        completion = await self._clients.get().chat.completions.create(**self._kwargs(request))
        choice = completion.choices[0]
        text = choice.message.content or ""
        usage = getattr(completion, "usage", None)
        return ProviderResponse(
            text=text,
            model=completion.model or request.model,
            prompt_tokens=int(usage.prompt_tokens) if usage else estimate_tokens(request.prompt),
            completion_tokens=int(usage.completion_tokens) if usage else estimate_tokens(text),
            finish_reason=choice.finish_reason,
            provider=self.name,
        )

    async def stream(self, request: ProviderRequest) -> AsyncIterator[StreamItem]:
        """Text deltas of a streamed chat completion (usage requested in the last chunk), then the whole response."""
        chunks = await self._clients.get().chat.completions.create(
            **self._kwargs(request), stream=True, stream_options={"include_usage": True}
        )
        parts: list[str] = []
        model, usage, finish_reason = request.model, None, None
        async for chunk in chunks:
            model = chunk.model or model
            usage = getattr(chunk, "usage", None) or usage
            for choice in chunk.choices[:1]:
                finish_reason = choice.finish_reason or finish_reason
                if choice.delta is not None and choice.delta.content:
                    parts.append(choice.delta.content)
                    yield choice.delta.content
        text = "".join(parts)
        yield ProviderResponse(
            text=text,
            model=model,
            prompt_tokens=int(usage.prompt_tokens) if usage else estimate_tokens(request.prompt),
            completion_tokens=int(usage.completion_tokens) if usage else estimate_tokens(text),
            finish_reason=finish_reason,
            provider=self.name,
        )
