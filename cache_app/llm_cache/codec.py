"""What an LLM cache entry is, how its identity is hashed, and how it is stored.

Identity: SHA-256 over ``keys.canonical_json`` of the prompt, the model, the normalised
temperature and every generation parameter. Numbers are normalised (``0.7 == 0.70``,
``0 == 0.0 == -0.0``, ``1 == 1.0``) and a parameter set to None counts as absent, so the
same request always yields the same key in every process, on every machine and Python
version (no ``hash()``, no dict ordering, no float repr drift).

Storage: ``<tag>|`` + msgpack map. Never pickle: a value that fails to decode or to
validate is reported as corrupt (the cache then counts a miss and deletes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgpack

from .. import keys

FORMAT_VERSION = 1
# The field separating the generation tag from the payload inside a stored value.
TAG_SEPARATOR = b"|"
TRUNCATED_FINISH_REASONS = frozenset({"length", "max_tokens"})


@dataclass(frozen=True)
class CachedLLMResponse:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_at: float  # unix seconds
    finish_reason: str | None = None
    masterplan_id: str | None = None  # canonical UUID, None for the global scope


class CorruptEntryError(ValueError):
    """A stored value that is not a valid entry of this format."""


def normalize_number(value: float) -> int | float:
    """Round to 6 decimals; integral values become ints so 1 and 1.0 encode alike."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    number = round(number, 6) + 0.0  # + 0.0 folds -0.0 into 0.0
    return int(number) if number.is_integer() else number


def normalize_temperature(temperature: Any) -> int | float:
    try:
        normalized = normalize_number(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a finite number, got {temperature!r}") from None
    if normalized < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")
    return normalized


def _normalize_param(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return normalize_number(value)
    if isinstance(value, (list, tuple)):
        return [_normalize_param(v) for v in value]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"parameter mapping keys must be strings, got {k!r}")
            out[k] = _normalize_param(v)
        return out
    raise TypeError(f"unsupported generation parameter type {type(value).__name__}; use JSON types")


def identity_digest(prompt: str, model: str, temperature: Any, params: dict[str, Any]) -> str:
    """SHA-256 hex digest of everything that changes the answer."""
    if not isinstance(prompt, str):
        raise TypeError("prompt must be a str")
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty str")
    payload = {
        "v": FORMAT_VERSION,
        "prompt": prompt,
        "model": model,
        "temperature": normalize_temperature(temperature),
        # None means "not given": system=None and no system are one request.
        "params": {k: _normalize_param(v) for k, v in params.items() if v is not None},
    }
    return keys.digest(payload)


def encode(response: CachedLLMResponse) -> bytes:
    return msgpack.packb(
        {
            "v": FORMAT_VERSION,
            "text": response.text,
            "model": response.model,
            "prompt_tokens": response.prompt_tokens,
            "completion_tokens": response.completion_tokens,
            "cached_at": float(response.cached_at),
            "finish_reason": response.finish_reason,
            "masterplan_id": response.masterplan_id,
        },
        use_bin_type=True,
    )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def decode(payload: bytes, *, expected_model: str) -> CachedLLMResponse:
    """Decode and validate one payload (without its tag). Raises CorruptEntryError."""
    try:
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CorruptEntryError(f"undecodable entry: {type(exc).__name__}") from None
    if not isinstance(data, dict) or data.get("v") != FORMAT_VERSION:
        raise CorruptEntryError("not an entry of this format")
    text, model = data.get("text"), data.get("model")
    cached_at, finish_reason, masterplan_id = (
        data.get("cached_at"),
        data.get("finish_reason"),
        data.get("masterplan_id"),
    )
    if (
        not isinstance(text, str)
        or not text
        or model != expected_model
        or not _is_count(data.get("prompt_tokens"))
        or not _is_count(data.get("completion_tokens"))
        or not isinstance(cached_at, (int, float))
        or isinstance(cached_at, bool)
        or not (finish_reason is None or isinstance(finish_reason, str))
        or not (masterplan_id is None or isinstance(masterplan_id, str))
    ):
        raise CorruptEntryError("entry fields are missing or of the wrong type")
    return CachedLLMResponse(
        text=text,
        model=model,
        prompt_tokens=data["prompt_tokens"],
        completion_tokens=data["completion_tokens"],
        cached_at=float(cached_at),
        finish_reason=finish_reason,
        masterplan_id=masterplan_id,
    )


def make_tag(epoch: bytes | str | int | None, generation: bytes | str | int | None) -> bytes:
    """``e<epoch>g<gen>|`` — must match ``TAG_LUA`` in scripts.py byte for byte."""

    def part(v: bytes | str | int | None) -> bytes:
        if v is None:
            return b"0"
        return v if isinstance(v, bytes) else str(v).encode()

    return b"e" + part(epoch) + b"g" + part(generation) + TAG_SEPARATOR
