"""Anthropic Messages (``POST /v1/messages``) as the official ``anthropic`` SDK sends and parses it."""

from __future__ import annotations

import uuid
from typing import Any

from cache_app.gateway.conversation import DEFAULT_TEMPERATURE, MAX_TURNS, ChatRequest, Turn, join_parts
from cache_app.gateway.errors import GatewayError, Kind, invalid
from cache_app.gateway.formats.base import (
    check_params,
    finish_reason,
    flag,
    model_name,
    output_tokens,
    sse,
    temperature,
    text_parts,
)
from cache_app.llm.client import LLMResponse

# Parameters that do not change the answer (accepted, not forwarded) or that this module reads.
# Temperature is not in the current SDK's signature; a client may still send it (extra_body).
KNOWN = frozenset(
    {"model", "messages", "system", "max_tokens", "temperature", "stream", "metadata", "service_tier", "cache_control"}
)
# Content block keys besides type/text: prompt-caching hints and citations do not change the text.
BLOCK_KEYS = frozenset({"type", "text", "cache_control", "citations"})

ERROR_TYPES = {
    Kind.INVALID_REQUEST: "invalid_request_error",
    Kind.AUTHENTICATION: "authentication_error",
    Kind.PERMISSION: "permission_error",
    Kind.NOT_FOUND: "not_found_error",
    Kind.TOO_LARGE: "request_too_large",
    Kind.RATE_LIMIT: "rate_limit_error",
    Kind.INTERNAL: "api_error",
    Kind.UPSTREAM: "api_error",
    Kind.TIMEOUT: "timeout_error",
}


class AnthropicFormat:
    name = "anthropic"

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        check_params(body, KNOWN, {})
        return ChatRequest(
            model=model_name(body),
            turns=_turns(body.get("messages")),
            system=_system(body.get("system")),
            temperature=temperature(body, default=DEFAULT_TEMPERATURE, high=1.0),
            max_tokens=output_tokens(body, "max_tokens", required=True),
            stream=flag(body, "stream"),
        )

    def response(self, chat: ChatRequest, result: LLMResponse) -> dict[str, Any]:
        return {
            "id": _new_id(),
            "type": "message",
            "role": "assistant",
            "model": chat.model,
            "content": [{"type": "text", "text": result.text}],
            "stop_reason": _stop_reason(result),
            "stop_sequence": None,
            "usage": {"input_tokens": result.prompt_tokens, "output_tokens": result.completion_tokens},
        }

    def stream_writer(self, chat: ChatRequest, prompt_tokens: int) -> AnthropicStream:
        return AnthropicStream(chat, prompt_tokens)

    def error_body(self, err: GatewayError) -> dict[str, Any]:
        return {"type": "error", "error": {"type": ERROR_TYPES[err.kind], "message": err.message}}


class AnthropicStream:
    """message_start, content_block_start, content_block_delta..., content_block_stop, message_delta, message_stop."""

    def __init__(self, chat: ChatRequest, prompt_tokens: int) -> None:
        self.chat = chat
        self.prompt_tokens = prompt_tokens  # an estimate on a miss; message_delta carries the real count

    def start(self) -> bytes:
        message: dict[str, Any] = {
            "id": _new_id(),
            "type": "message",
            "role": "assistant",
            "model": self.chat.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0},
        }
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        return sse({"type": "message_start", "message": message}, "message_start") + sse(block, "content_block_start")

    def delta(self, text: str) -> bytes:
        event = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
        return sse(event, "content_block_delta")

    def finish(self, result: LLMResponse) -> bytes:
        usage = {"input_tokens": result.prompt_tokens, "output_tokens": result.completion_tokens}
        delta = {"stop_reason": _stop_reason(result), "stop_sequence": None}
        return (
            sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            + sse({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta")
            + sse({"type": "message_stop"}, "message_stop")
        )

    def error(self, err: GatewayError) -> bytes:
        return sse(AnthropicFormat().error_body(err), "error")


def _turns(messages: Any) -> tuple[Turn, ...]:
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: must be a non-empty list.", "messages")
    if len(messages) > MAX_TURNS:
        raise invalid(f"messages: at most {MAX_TURNS} messages.", "messages")
    turns = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise invalid(f"{where}: must be an object.", "messages")
        extra = set(message) - {"role", "content"}
        if extra:
            raise invalid(f"{where}: {sorted(extra)[0]!r} is not supported by the mgecache gateway.", "messages")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise invalid(f"{where}.role: must be 'user' or 'assistant'.", "messages")
        turns.append(Turn(role, join_parts(text_parts(message.get("content"), f"{where}.content", BLOCK_KEYS))))
    return tuple(turns)


def _system(system: Any) -> str | None:
    if system is None:
        return None
    return join_parts([part for part in text_parts(system, "system", BLOCK_KEYS) if part]) or None


def _stop_reason(result: LLMResponse) -> str:
    return finish_reason(result.finish_reason, truncated="max_tokens", stopped="end_turn")


def _new_id() -> str:
    return f"msg_{uuid.uuid4().hex}"
