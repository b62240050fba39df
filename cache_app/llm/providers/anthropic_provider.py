"""Anthropic Messages API through the official SDK (``AsyncAnthropic().messages.create``)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from cache_app.llm.providers.base import PerLoopClients, ProviderRequest, ProviderResponse, estimate_tokens


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

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if self.send_temperature:
            kwargs["extra_body"] = {"temperature": request.temperature}
        if request.system:
            kwargs["system"] = request.system
        message = await self._clients.get().messages.create(**kwargs)
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


def _prompt_tokens(usage: Any) -> int:
    # input_tokens excludes tokens written to or read from Anthropic's own prompt cache;
    # all of them were part of the prompt.
    return (
        int(usage.input_tokens)
        + int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
        + int(getattr(usage, "cache_read_input_tokens", 0) or 0)
    )
