"""The workload format: a JSONL file with one atom per line (docs/benchmarks.md).

::

    {"masterplan": "<uuid>", "run": 1, "wave": 3, "atom_id": "<uuid>", "prompt": "...",
     "model": "...", "temperature": 0.0, "max_tokens": 800, "rag_query": "...", "top_k": 5}

``model``, ``max_tokens``, ``rag_query`` and ``top_k`` are optional. ``run`` groups
executions of the same masterplan (run 2 re-executes it). The whole file is validated
before anything runs: every problem names its line and field, and a file with any
problem is refused. Unknown fields are problems too (a typo must not be ignored).
"""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

MAX_FILE_BYTES = 512 * 1024 * 1024
MAX_ATOMS = 100_000
MAX_PROMPT_CHARS = 200_000
MAX_QUERY_CHARS = 10_000
MAX_MODEL_CHARS = 100
MAX_TOKENS = 200_000
MAX_TOP_K = 100
MAX_RUN = 1_000
MAX_WAVE = 10_000
MAX_PROBLEMS = 20  # reported at once; the rest are counted
DEFAULT_TOP_K = 5

REQUIRED = ("masterplan", "run", "wave", "atom_id", "prompt", "temperature")
OPTIONAL = ("model", "max_tokens", "rag_query", "top_k")


@dataclass(frozen=True)
class Problem:
    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line else "file"
        return f"{where}, field '{self.field}': {self.message}" if self.field else f"{where}: {self.message}"


class WorkloadError(ValueError):
    """The workload is malformed; ``problems`` lists each (line, field, message)."""

    def __init__(self, source: str, problems: list[Problem], more: int = 0) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {problem}" for problem in problems]
        if more:
            lines.append(f"... and {more} more problems")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Atom:
    line: int
    masterplan: str
    run: int
    wave: int
    atom_id: uuid.UUID
    prompt: str
    temperature: float
    model: str | None = None
    max_tokens: int | None = None
    rag_query: str | None = None
    top_k: int = DEFAULT_TOP_K


@dataclass(frozen=True)
class Step:
    """The atoms of one wave of one run (of every masterplan in the file): they run together."""

    run: int
    wave: int
    atoms: tuple[Atom, ...]


@dataclass(frozen=True)
class Workload:
    source: str
    sha256: str
    atoms: tuple[Atom, ...]

    @property
    def masterplans(self) -> list[str]:
        return list(dict.fromkeys(atom.masterplan for atom in self.atoms))

    @property
    def runs(self) -> list[int]:
        return sorted({atom.run for atom in self.atoms})

    def steps(self) -> list[Step]:
        """Run by run, wave by wave (ascending); file order within a wave."""
        ordered = sorted(self.atoms, key=lambda a: (a.run, a.wave))
        return [Step(run, wave, tuple(group)) for (run, wave), group in groupby(ordered, key=lambda a: (a.run, a.wave))]


class _Bad(Exception):
    pass


def _uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise _Bad("must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _Bad(f"must be a UUID, got {value[:60]!r}")


def _int_between(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Bad(f"must be an integer from {low} to {high}, got {value!r}"[:200])
        return value

    return check


def _text(limit: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _Bad("must be a non-empty string")
        if len(value) > limit:
            raise _Bad(f"must be at most {limit} characters, got {len(value)}")
        return value

    return check


def _temperature(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(f"must be a number from 0 to 2, got {value!r}"[:200])
    if not 0 <= value <= 2:
        raise _Bad(f"must be a number from 0 to 2, got {value!r}")
    return float(value)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "masterplan": lambda v: str(_uuid(v)),
    "run": _int_between(1, MAX_RUN),
    "wave": _int_between(0, MAX_WAVE),
    "atom_id": _uuid,
    "prompt": _text(MAX_PROMPT_CHARS),
    "temperature": _temperature,
    "model": _text(MAX_MODEL_CHARS),
    "max_tokens": _int_between(1, MAX_TOKENS),
    "rag_query": _text(MAX_QUERY_CHARS),
    "top_k": _int_between(1, MAX_TOP_K),
}


def _decode(number: int, line: str, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        problems.append(Problem(number, None, f"invalid JSON ({exc.msg} at column {exc.colno})"))
        return None
    if not isinstance(record, dict):
        problems.append(Problem(number, None, f"expected a JSON object, got {type(record).__name__}"))
        return None
    return record


def _check_fields(number: int, record: dict[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """The checked values of ``record``; each problem found is appended."""
    problems.extend(
        Problem(number, str(name)[:60], f"unknown field (known: {', '.join(_CHECKS)})")
        for name in record
        if name not in _CHECKS
    )
    problems.extend(Problem(number, name, "is required") for name in REQUIRED if name not in record)
    values: dict[str, Any] = {}
    for name, check in _CHECKS.items():
        if name not in record:
            continue
        if record[name] is None:
            if name in REQUIRED:
                problems.append(Problem(number, name, "must not be null"))
            continue
        try:
            values[name] = check(record[name])
        except _Bad as exc:
            problems.append(Problem(number, name, str(exc)))
    if "top_k" in values and "rag_query" not in values:
        problems.append(Problem(number, "top_k", "given without a rag_query"))
    return values


def _parse_record(number: int, line: str, problems: list[Problem]) -> Atom | None:
    record = _decode(number, line, problems)
    if record is None:
        return None
    found = len(problems)
    values = _check_fields(number, record, problems)
    if len(problems) > found:
        return None
    values.setdefault("top_k", DEFAULT_TOP_K)
    return Atom(line=number, **values)


def parse_lines(lines: Iterable[str], *, source: str = "<workload>") -> Workload:
    """Validate every line; return the workload or raise WorkloadError listing the problems."""
    problems: list[Problem] = []
    atoms: list[Atom] = []
    seen: dict[tuple[str, int, uuid.UUID], int] = {}
    digest = hashlib.sha256()
    for number, line in enumerate(lines, start=1):
        digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
        if not line.strip():
            continue
        if len(atoms) >= MAX_ATOMS:
            problems.append(Problem(number, None, f"more than {MAX_ATOMS} atoms"))
            break
        atom = _parse_record(number, line, problems)
        if atom is None:
            continue
        identity = (atom.masterplan, atom.run, atom.atom_id)
        if identity in seen:
            problems.append(
                Problem(
                    number,
                    "atom_id",
                    f"{atom.atom_id} appears twice in run {atom.run} (first on line {seen[identity]})",
                )
            )
            continue
        seen[identity] = number
        atoms.append(atom)
    if not atoms and not problems:
        problems.append(Problem(0, None, "no atoms"))
    if problems:
        raise WorkloadError(source, problems[:MAX_PROBLEMS], more=max(0, len(problems) - MAX_PROBLEMS))
    return Workload(source=source, sha256=digest.hexdigest(), atoms=tuple(atoms))


def parse_workload(path: str | Path) -> Workload:
    """Read and validate a workload file (UTF-8 JSONL)."""
    path = Path(path)
    source = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WorkloadError(source, [Problem(0, None, f"cannot be read ({exc.strerror or exc})")])
    if not path.is_file():
        raise WorkloadError(source, [Problem(0, None, "is not a file")])
    if size > MAX_FILE_BYTES:
        raise WorkloadError(source, [Problem(0, None, f"is larger than {MAX_FILE_BYTES} bytes")])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WorkloadError(source, [Problem(0, None, f"is not UTF-8 text ({exc.reason} at byte {exc.start})")])
    return parse_lines(text.splitlines(), source=source)
