"""OpenAI Chat Completions (``POST /v1/chat/completions``) as the official ``openai`` SDK sends and parses it."""

from __future__ import annotations

import time
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
KNOWN = frozenset(
    {
        "model",
        "messages",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "stream",
        "stream_options",
        "user",
        "metadata",
        "store",
        "service_tier",
        "safety_identifier",
        "prompt_cache_key",
        "prompt_cache_retention",
    }
)
# Parameters accepted only at their no-op value.
NO_OP = {
    "n": 1,
    "top_p": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "response_format": {"type": "text"},
    "modalities": ["text"],
}
SYSTEM_ROLES = frozenset({"system", "developer"})

ERROR_TYPES = {
    Kind.INVALID_REQUEST: "invalid_request_error",
    Kind.AUTHENTICATION: "invalid_request_error",
    Kind.PERMISSION: "permission_error",
    Kind.NOT_FOUND: "invalid_request_error",
    Kind.TOO_LARGE: "invalid_request_error",
    Kind.RATE_LIMIT: "rate_limit_error",
    Kind.INTERNAL: "server_error",
    Kind.UPSTREAM: "server_error",
    Kind.TIMEOUT: "server_error",
}


class OpenAIFormat:
    name = "openai"

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        check_params(body, KNOWN, NO_OP)
        system, turns = _messages(body.get("messages"))
        max_tokens = output_tokens(body, "max_completion_tokens")
        if max_tokens is None:
            max_tokens = output_tokens(body, "max_tokens")
        stream = flag(body, "stream")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise invalid("'stream_options' must be an object.", "stream_options")
        return ChatRequest(
            model=model_name(body),
            turns=turns,
            system=system,
            temperature=temperature(body, default=DEFAULT_TEMPERATURE, high=2.0),
            max_tokens=max_tokens,
            stream=stream,
            stream_usage=stream and options.get("include_usage") is True,
        )

    def response(self, chat: ChatRequest, result: LLMResponse) -> dict[str, Any]:
        return {
            "id": _new_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": chat.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": result.text, "refusal": None},
                    "finish_reason": _finish(result),
                    "logprobs": None,
                }
            ],
            "usage": _usage(result),
        }

    def stream_writer(self, chat: ChatRequest, prompt_tokens: int) -> OpenAIStream:
        return OpenAIStream(chat)

    def error_body(self, err: GatewayError) -> dict[str, Any]:
        return {"error": {"message": err.message, "type": ERROR_TYPES[err.kind], "param": err.param, "code": err.code}}


class OpenAIStream:
    """``chat.completion.chunk`` events: the role, the content deltas, the finish reason, [usage], ``[DONE]``."""

    def __init__(self, chat: ChatRequest) -> None:
        self.chat = chat
        self.id = _new_id()
        self.created = int(time.time())

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return sse(self._envelope([choice]))

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.chat.model,
            "choices": choices,
        }

    def start(self) -> bytes:
        return self._chunk({"role": "assistant", "content": ""})

    def delta(self, text: str) -> bytes:
        return self._chunk({"content": text})

    def finish(self, result: LLMResponse) -> bytes:
        events = self._chunk({}, _finish(result))
        if self.chat.stream_usage:
            events += sse({**self._envelope([]), "usage": _usage(result)})
        return events + sse("[DONE]")

    def error(self, err: GatewayError) -> bytes:
        return sse(OpenAIFormat().error_body(err))


def _messages(messages: Any) -> tuple[str | None, tuple[Turn, ...]]:
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty list.", "messages")
    if len(messages) > MAX_TURNS:
        raise invalid(f"'messages' may hold at most {MAX_TURNS} messages.", "messages")
    system: list[str] = []
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"{where} must be an object.", "messages")
        extra = set(message) - {"role", "content"}
        if extra:
            raise invalid(f"{where}: {sorted(extra)[0]!r} is not supported by the mgecache gateway.", "messages")
        role = message.get("role")
        text = join_parts(text_parts(message.get("content"), f"{where}.content", frozenset({"type", "text"})))
        if role in SYSTEM_ROLES:
            system.append(text)
        elif role in ("user", "assistant"):
            turns.append(Turn(role, text))
        else:
            raise invalid(f"{where}: role {role!r} is not supported by the mgecache gateway.", "messages")
    if not turns:
        raise invalid("'messages' must hold at least one user or assistant message.", "messages")
    joined = join_parts([part for part in system if part])
    return joined or None, tuple(turns)


def _finish(result: LLMResponse) -> str:
    return finish_reason(result.finish_reason, truncated="length", stopped="stop")


def _usage(result: LLMResponse) -> dict[str, int]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }


def _new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
