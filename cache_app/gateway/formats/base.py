"""What a wire format provides, and the validation helpers both formats share."""

from __future__ import annotations

import json
import math
from typing import Any, Protocol

from cache_app.gateway.conversation import MAX_MODEL_LENGTH, MAX_OUTPUT_TOKENS, ChatRequest
from cache_app.gateway.errors import GatewayError, invalid
from cache_app.llm.client import LLMResponse

TRUNCATED = frozenset({"length", "max_tokens"})


class StreamWriter(Protocol):
    """Server-sent events of one streamed answer, as bytes."""

    def start(self) -> bytes: ...

    def delta(self, text: str) -> bytes: ...

    def finish(self, result: LLMResponse) -> bytes: ...

    def error(self, err: GatewayError) -> bytes: ...


class WireFormat(Protocol):
    name: str

    def parse(self, body: dict[str, Any]) -> ChatRequest: ...

    def response(self, chat: ChatRequest, result: LLMResponse) -> dict[str, Any]: ...

    def stream_writer(self, chat: ChatRequest, prompt_tokens: int) -> StreamWriter: ...

    def error_body(self, err: GatewayError) -> dict[str, Any]: ...


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event (``data`` is JSON-encoded unless it is a str)."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def check_params(body: dict[str, Any], known: frozenset[str], defaults: dict[str, Any]) -> None:
    """Refuse any parameter the gateway cannot honour (unless absent, null or at its no-op default)."""
    for name, value in body.items():
        if name in known or value is None:
            continue
        if name in defaults and value == defaults[name]:
            continue
        raise invalid(f"'{name}' is not supported by the mgecache gateway.", name)


def model_name(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise invalid("'model' is required and must be a non-empty string.", "model")
    if len(model) > MAX_MODEL_LENGTH:
        raise invalid(f"'model' must be at most {MAX_MODEL_LENGTH} characters.", "model")
    return model


def temperature(body: dict[str, Any], *, default: float, high: float) -> float:
    value = body.get("temperature")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid("'temperature' must be a number.", "temperature")
    if not 0 <= value <= high:
        raise invalid(f"'temperature' must be between 0 and {high}.", "temperature")
    return float(value)


def output_tokens(body: dict[str, Any], name: str, *, required: bool = False) -> int | None:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"'{name}' is required.", name)
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_OUTPUT_TOKENS:
        raise invalid(f"'{name}' must be an integer between 1 and {MAX_OUTPUT_TOKENS}.", name)
    return value


def flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise invalid(f"'{name}' must be a boolean.", name)
    return value


def text_parts(content: Any, where: str, block_keys: frozenset[str]) -> list[str]:
    """The text of a message's content: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list):
        raise invalid(f"{where} must be a string or a list of text parts.", where)
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise invalid(f"{where}: only text parts are supported by the mgecache gateway (got {kind!r}).", where)
        extra = set(part) - block_keys
        if extra:
            raise invalid(f"{where}: {sorted(extra)[0]!r} is not supported by the mgecache gateway.", where)
        parts.append(part["text"])
    return parts


def finish_reason(raw: str | None, *, truncated: str, stopped: str) -> str:
    return truncated if raw in TRUNCATED else stopped
