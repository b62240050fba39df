"""A wave's input and outcomes: the atoms' types, their validation, batch planning, result JSON."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cache_app.core import conf, keys
from cache_app.llm.client import LLMResponse

PENDING, HIT, ANSWERED, FAILED = "pending", "hit", "answered", "failed"
STATUSES = (PENDING, HIT, ANSWERED, FAILED)
OVERRIDE_FIELDS = ("model", "temperature", "max_tokens", "system")
DEADLINE_EXCEEDED = "deadline exceeded"

# Input bounds (the API's serializers state the same limits); prompts and systems are bounded by
# the MGECACHE settings MAX_PROMPT_CHARS and MAX_SYSTEM_CHARS. MAX_TOKENS is the largest maximum
# output a ModelPricing row may declare.
MAX_MODEL_CHARS = 100
MAX_TOKENS = 1_000_000
MAX_ERROR_CHARS = 500
MAX_DEADLINE_SECONDS = 3600.0


class WaveValidationError(ValueError):
    """Bad wave input. ``errors`` maps a field path (``atoms.3.prompt``) to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{name}: {' '.join(messages)}" for name, messages in errors.items()))


@dataclass(frozen=True)
class GenerationParams:
    model: str
    temperature: float
    max_tokens: int | None = None
    system: str | None = None


@dataclass(frozen=True)
class AtomSpec:
    index: int  # position in the wave's input
    atom_id: uuid.UUID
    prompt: str
    params: GenerationParams

    def identity(self) -> tuple:
        """Atoms with the same identity have the same cache entry (the wave has one masterplan)."""
        return (self.prompt, self.params)

    def to_json(self) -> str:
        return keys.canonical_json({"atom_id": str(self.atom_id), "prompt": self.prompt, **asdict(self.params)})

    @classmethod
    def from_json(cls, index: int, raw: str | bytes) -> AtomSpec:
        data = json.loads(raw)
        return cls(index, uuid.UUID(data.pop("atom_id")), data.pop("prompt"), GenerationParams(**data))


@dataclass(frozen=True)
class WaveMeta:
    wave_id: str
    masterplan_id: str
    created_at: float  # epoch seconds (wall clock: shared by every process)
    deadline: float
    size: int

    def to_json(self) -> str:
        return keys.canonical_json(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> WaveMeta:
        return cls(**json.loads(raw))


# --- input -------------------------------------------------------------------------------------


def _check_params(raw: Mapping[str, Any], where: str, errors: dict[str, list[str]]) -> None:
    unknown = sorted(set(raw) - set(OVERRIDE_FIELDS))
    if unknown:
        errors.setdefault(where, []).append(f"unknown fields: {', '.join(unknown)}")
    model = raw.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS):
        errors.setdefault(f"{where}.model", []).append(f"a non-blank string of at most {MAX_MODEL_CHARS} characters")
    temperature = raw.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or not 0 <= temperature <= 2
    ):
        errors.setdefault(f"{where}.temperature", []).append("a number between 0 and 2")
    max_tokens = raw.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS
    ):
        errors.setdefault(f"{where}.max_tokens", []).append(f"an integer between 1 and {MAX_TOKENS}")
    system, limit = raw.get("system"), int(conf.get("MAX_SYSTEM_CHARS"))
    if system is not None and (not isinstance(system, str) or len(system) > limit):
        errors.setdefault(f"{where}.system", []).append(f"a string of at most {limit} characters")


def _check_atom(i: int, atom: Any, errors: dict[str, list[str]]) -> None:
    """One atom's input. Atom ids label the atoms; the report keeps the input order, so they may repeat."""
    where = f"atoms.{i}"
    if not isinstance(atom, Mapping):
        errors.setdefault(where, []).append("an object with atom_id and prompt")
        return
    unknown = sorted(set(atom) - {"atom_id", "prompt", "overrides"})
    if unknown:
        errors.setdefault(where, []).append(f"unknown fields: {', '.join(unknown)}")
    try:
        uuid.UUID(str(atom.get("atom_id")))
    except ValueError:
        errors.setdefault(f"{where}.atom_id", []).append("a UUID")
    prompt, limit = atom.get("prompt"), int(conf.get("MAX_PROMPT_CHARS"))
    if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > limit:
        errors.setdefault(f"{where}.prompt", []).append(f"a non-blank string of at most {limit} characters")
    overrides = atom.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        errors.setdefault(f"{where}.overrides", []).append("an object")
    else:
        _check_params(overrides, f"{where}.overrides", errors)


def build_atoms(defaults: Mapping[str, Any] | None, atoms: Sequence[Any]) -> list[AtomSpec]:
    """Validate a wave's input and resolve each atom's parameters (defaults, then its overrides)."""
    errors: dict[str, list[str]] = {}
    defaults = defaults or {}
    if not isinstance(defaults, Mapping):
        raise WaveValidationError({"defaults": ["an object"]})
    _check_params(defaults, "defaults", errors)
    limit = int(conf.get("MAX_WAVE_ATOMS"))
    if isinstance(atoms, (str, bytes)) or not isinstance(atoms, Sequence) or not 1 <= len(atoms) <= limit:
        raise WaveValidationError({**errors, "atoms": [f"a list of 1 to {limit} atoms"]})
    for i, atom in enumerate(atoms):
        _check_atom(i, atom, errors)
    if errors:
        raise WaveValidationError(errors)
    temperature = defaults.get("temperature")
    base = {
        "model": defaults.get("model") or conf.get("LLM_DEFAULT_MODEL"),
        "temperature": 0.7 if temperature is None else temperature,
        "max_tokens": defaults.get("max_tokens"),
        "system": defaults.get("system"),
    }
    specs = []
    for i, atom in enumerate(atoms):
        merged = {**base, **{k: v for k, v in (atom.get("overrides") or {}).items() if v is not None}}
        merged["temperature"] = float(merged["temperature"])
        specs.append(AtomSpec(i, uuid.UUID(str(atom["atom_id"])), atom["prompt"], GenerationParams(**merged)))
    return specs


def plan_batches(misses: Sequence[AtomSpec], max_batch_size: int) -> list[list[int]]:
    """Batches of atom indexes: one parameter set each, at most ``max_batch_size`` distinct prompts.

    Atoms with identical prompts go to the same batch, where single-flight answers them with
    one call. Order follows the input.
    """
    size = max(1, int(max_batch_size))
    groups: dict[GenerationParams, dict[str, list[int]]] = {}
    for atom in misses:
        groups.setdefault(atom.params, {}).setdefault(atom.prompt, []).append(atom.index)
    batches: list[list[int]] = []
    for by_prompt in groups.values():
        distinct = list(by_prompt.values())
        for start in range(0, len(distinct), size):
            batches.append([index for same in distinct[start : start + size] for index in same])
    return batches


# --- outcomes ----------------------------------------------------------------------------------


def success_result(response: LLMResponse) -> tuple[str, str]:
    """(status, result JSON) of an answered atom."""
    status = HIT if response.cached and response.cache_layer == "llm" else ANSWERED
    data = response.as_dict()
    data.pop("latency_s", None)
    return status, keys.canonical_json(data)


def failure_result(error: BaseException | str) -> tuple[str, str]:
    message = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return FAILED, keys.canonical_json({"error": message[:MAX_ERROR_CHARS]})
