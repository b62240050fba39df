"""Calibrating the RAG similarity threshold on labelled query pairs.

A pair ``{"a": ..., "b": ..., "same": true|false, "kind": ...}`` says whether a retrieval
cached for ``a`` may answer ``b``. For each candidate threshold, with and without the hit
guard, :func:`calibrate` reports how many different-meaning pairs would be served (false
hits) and the hit rate of each kind (``near_duplicate``, ``paraphrase``, ...). The
recommended threshold is the lowest candidate with zero false hits.

A pair is a hit at threshold *t* when the cosine similarity of the two embeddings is at
least *t* and, when guarded, the guard accepts ``a`` as a cached query for a lookup of
``b``: what ``RAGQueryCache`` does with ``a`` cached and ``b`` looked up.
``manage.py calibrate_similarity`` is the command-line front end.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache_app.rag.embedders import Embedder
from cache_app.rag.guard import MAX_CHARS, NEAR_DUPLICATE_FLOOR, HitGuard

# Bounds on what a pairs file may hold.
MAX_PAIRS = 20_000
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_KIND_CHARS = 40
MAX_THRESHOLDS = 200
# Thresholds a policy accepts (CachePolicy.similarity_threshold validators).
MIN_THRESHOLD, MAX_THRESHOLD = 0.5, 1.0
DEFAULT_THRESHOLDS = tuple(round(0.70 + 0.01 * i, 2) for i in range(30))  # 0.70 ... 0.99
EMBED_BATCH = 256
NEAR_DUPLICATE, PARAPHRASE = "near_duplicate", "paraphrase"


class PairsError(ValueError):
    """A pairs file or threshold list that cannot be used (the message says where and why)."""


@dataclass(frozen=True)
class LabelledPair:
    a: str
    b: str
    same: bool
    kind: str


@dataclass(frozen=True)
class ScoredPair:
    pair: LabelledPair
    score: float  # cosine similarity of the two embeddings
    guard_reason: str | None  # why the guard refuses the pair, None when it accepts it
    near_duplicate: bool = False  # the guard sees a lexical near-duplicate (served down to its floor)

    def hit(self, threshold: float, *, guarded: bool) -> bool:
        """What RAGQueryCache does with ``a`` cached and ``b`` looked up, at this threshold."""
        if not guarded:
            return self.score >= threshold
        if self.guard_reason is not None:
            return False
        return self.score >= threshold or (self.near_duplicate and self.score >= min(threshold, NEAR_DUPLICATE_FLOOR))


# --- reading ------------------------------------------------------------------------------------


def _parse_line(number: int, line: str) -> LabelledPair:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PairsError(f"line {number}: not JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise PairsError(f"line {number}: expected a JSON object")
    for name in ("a", "b"):
        text = row.get(name)
        if not isinstance(text, str) or not text.strip():
            raise PairsError(f"line {number}: {name!r} must be a non-empty string")
        if len(text) > MAX_CHARS:
            raise PairsError(f"line {number}: {name!r} is longer than {MAX_CHARS} characters")
    if not isinstance(row.get("same"), bool):
        raise PairsError(f"line {number}: 'same' must be true or false")
    kind = row.get("kind", "same" if row["same"] else "different")
    if not isinstance(kind, str) or not kind or len(kind) > MAX_KIND_CHARS:
        raise PairsError(f"line {number}: 'kind' must be a string of 1 to {MAX_KIND_CHARS} characters")
    return LabelledPair(row["a"], row["b"], row["same"], kind)


def read_pairs(lines: Iterable[str]) -> list[LabelledPair]:
    """Parse JSON Lines (blank lines are skipped). Raises PairsError naming the first bad line."""
    pairs: list[LabelledPair] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if len(pairs) >= MAX_PAIRS:
            raise PairsError(f"more than {MAX_PAIRS} pairs")
        pairs.append(_parse_line(number, line))
    if not any(not p.same for p in pairs):
        raise PairsError('no pair with "same": false: false hits cannot be measured')
    return pairs


def load_pairs(path: str | Path) -> list[LabelledPair]:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PairsError(f"cannot read {path}: {exc.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise PairsError(f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        with path.open(encoding="utf-8") as handle:
            return read_pairs(handle)
    except UnicodeDecodeError:
        raise PairsError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise PairsError(f"cannot read {path}: {exc.strerror}") from None


def _floats(spec: str, sep: str) -> list[float]:
    try:
        return [float(part) for part in spec.split(sep) if part.strip()]
    except ValueError:
        raise PairsError(f"bad threshold list {spec!r}: use 0.8,0.9 or 0.8:0.99:0.01") from None


def parse_thresholds(spec: str) -> tuple[float, ...]:
    """``"0.8,0.85,0.9"`` or ``"start:stop:step"`` (inclusive), each within the policy's range."""
    if ":" in spec:
        parts = _floats(spec, ":")
        if len(parts) != 3 or parts[2] <= 0:
            raise PairsError(f"bad threshold range {spec!r}: use start:stop:step with a positive step")
        start, stop, step = parts
        count = round((stop - start) / step) + 1
        if count > MAX_THRESHOLDS:
            raise PairsError(f"at most {MAX_THRESHOLDS} thresholds")
        values = [round(start + i * step, 4) for i in range(max(0, count))]
    else:
        values = _floats(spec, ",")
    if not values or len(values) > MAX_THRESHOLDS:
        raise PairsError(f"give 1 to {MAX_THRESHOLDS} thresholds")
    bad = [v for v in values if not MIN_THRESHOLD <= v <= MAX_THRESHOLD]
    if bad:
        raise PairsError(f"thresholds must be between {MIN_THRESHOLD} and {MAX_THRESHOLD}; got {bad[0]}")
    return tuple(sorted(set(values)))


# --- running -------------------------------------------------------------------------------------

EMBEDDER_ALIASES = {
    "hashed": "cache_app.rag.embedders.HashedNgramEmbedder",
    "minilm": "cache_app.rag.embedders.MiniLMEmbedder",
}


def embedder_path(name: str | None) -> str:
    """A dotted path from an alias (hashed, minilm), a dotted path, or None (the configured embedder)."""
    from cache_app.core import conf

    if not name:
        return str(conf.get("EMBEDDER"))
    return EMBEDDER_ALIASES.get(name.lower(), name)


def run(
    pairs_path: str | Path,
    *,
    embedder: str | None = None,
    guard: str | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> CalibrationReport:
    """Load the pairs, the embedder and the guard (by name), and calibrate. PairsError for a bad file;
    ImproperlyConfigured for an embedder or guard that cannot be loaded."""
    from cache_app.rag.embedders import load_embedder
    from cache_app.rag.guard import load_guard

    pairs = load_pairs(pairs_path)
    return calibrate(pairs, load_embedder(embedder_path(embedder)), load_guard(guard), thresholds)


# --- scoring -------------------------------------------------------------------------------------


def score_pairs(pairs: Sequence[LabelledPair], embedder: Embedder, guard: HitGuard) -> list[ScoredPair]:
    """Embed every distinct text once; score each pair and ask the guard about it."""
    texts = list(dict.fromkeys(t for p in pairs for t in (p.a, p.b)))
    rows = [
        np.asarray(embedder.embed(texts[i : i + EMBED_BATCH]), dtype=np.float64)
        for i in range(0, len(texts), EMBED_BATCH)
    ]
    matrix = np.vstack(rows)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.where(norms > 0, norms, 1.0)
    position = {text: i for i, text in enumerate(texts)}
    near = getattr(guard, "near_duplicate", None)
    scored = []
    for p in pairs:
        score = float(matrix[position[p.a]] @ matrix[position[p.b]])
        prepared = guard.prepare(p.b)
        lexical = bool(callable(near) and near(prepared, p.a))
        scored.append(ScoredPair(p, score, guard.check(prepared, p.a), lexical))
    return scored


# --- evaluating ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdResult:
    threshold: float
    guarded: bool
    false_hits: int
    different: int  # pairs labelled same: false
    kinds: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind -> (hits, pairs)

    @property
    def false_hit_rate(self) -> float:
        return self.false_hits / self.different if self.different else 0.0

    def hit_rate(self, kind: str) -> float | None:
        hits, total = self.kinds.get(kind, (0, 0))
        return hits / total if total else None

    @property
    def near_duplicate_rate(self) -> float | None:
        return self.hit_rate(NEAR_DUPLICATE)

    @property
    def paraphrase_rate(self) -> float | None:
        return self.hit_rate(PARAPHRASE)


def evaluate(scored: Sequence[ScoredPair], threshold: float, *, guarded: bool) -> ThresholdResult:
    kinds: dict[str, list[int]] = {}
    false_hits = different = 0
    for s in scored:
        hit = s.hit(threshold, guarded=guarded)
        tally = kinds.setdefault(s.pair.kind, [0, 0])
        tally[0] += hit
        tally[1] += 1
        if not s.pair.same:
            different += 1
            false_hits += hit
    return ThresholdResult(threshold, guarded, false_hits, different, {k: (v[0], v[1]) for k, v in kinds.items()})


def lowest_safe(results: Sequence[ThresholdResult], *, guarded: bool) -> float | None:
    """The lowest threshold with zero false hits (None if every candidate has some)."""
    safe = [r.threshold for r in results if r.guarded == guarded and r.false_hits == 0]
    return min(safe) if safe else None


@dataclass(frozen=True)
class CalibrationReport:
    embedding_model: str
    pairs: int
    results: list[ThresholdResult]
    recommended: float | None  # with the guard
    recommended_unguarded: float | None
    highest_false_score: dict[bool, float | None]  # guarded -> best score of a different-meaning pair

    def result(self, threshold: float, *, guarded: bool) -> ThresholdResult | None:
        for r in self.results:
            if r.guarded == guarded and abs(r.threshold - threshold) < 1e-9:
                return r
        return None

    def recommended_for(self, *, guarded: bool) -> float | None:
        return self.recommended if guarded else self.recommended_unguarded

    def as_dict(self) -> dict[str, Any]:
        return {
            "embedding_model": self.embedding_model,
            "pairs": self.pairs,
            "recommended": self.recommended,
            "recommended_unguarded": self.recommended_unguarded,
            "highest_false_score": {
                "guarded": self.highest_false_score[True],
                "unguarded": self.highest_false_score[False],
            },
            "results": [
                {
                    "threshold": r.threshold,
                    "guarded": r.guarded,
                    "false_hits": r.false_hits,
                    "different": r.different,
                    "false_hit_rate": r.false_hit_rate,
                    "near_duplicate_rate": r.near_duplicate_rate,
                    "paraphrase_rate": r.paraphrase_rate,
                    "kinds": {k: {"hits": h, "pairs": n} for k, (h, n) in sorted(r.kinds.items())},
                }
                for r in self.results
            ],
        }


def _highest_false(scored: Sequence[ScoredPair], *, guarded: bool) -> float | None:
    scores = [s.score for s in scored if not s.pair.same and s.hit(-1.0, guarded=guarded)]
    return max(scores) if scores else None


def calibrate(
    pairs: Sequence[LabelledPair],
    embedder: Embedder,
    guard: HitGuard,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> CalibrationReport:
    scored = score_pairs(pairs, embedder, guard)
    results = [evaluate(scored, t, guarded=g) for g in (True, False) for t in sorted(thresholds)]
    return CalibrationReport(
        embedding_model=embedder.model_name,
        pairs=len(pairs),
        results=results,
        recommended=lowest_safe(results, guarded=True),
        recommended_unguarded=lowest_safe(results, guarded=False),
        highest_false_score={g: _highest_false(scored, guarded=g) for g in (True, False)},
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:6.1%}"


def _table_line(plain: ThresholdResult, guarded: ThresholdResult) -> str:
    return (
        f"{plain.threshold:9.2f}  {plain.false_hits:>4}/{plain.different:<4} {_pct(plain.false_hit_rate):>12}"
        f"  {_pct(plain.near_duplicate_rate):>8}  {_pct(plain.paraphrase_rate):>8}"
        f"  {guarded.false_hits:>4}/{guarded.different:<4} {_pct(guarded.false_hit_rate):>9}"
        f"  {_pct(guarded.near_duplicate_rate):>8}  {_pct(guarded.paraphrase_rate):>8}"
    )


def _recommendation_line(report: CalibrationReport, *, guarded: bool) -> str:
    label = "with the guard" if guarded else "without the guard"
    best = report.recommended_for(guarded=guarded)
    highest = report.highest_false_score[guarded]
    top = "none" if highest is None else f"{highest:.4f}"
    result = None if best is None else report.result(best, guarded=guarded)
    if best is None or result is None:
        return f"{label}: no candidate threshold has zero false hits (highest false score {top})"
    near, para = _pct(result.near_duplicate_rate).strip(), _pct(result.paraphrase_rate).strip()
    return (
        f"{label}: lowest threshold with zero false hits {best:.2f} (highest false score {top}); "
        f"near-duplicates {near}, paraphrases {para}"
    )


def format_report(report: CalibrationReport) -> str:
    """A plain-text table, one line per threshold (without, then with the guard), and the recommendations."""
    lines = [
        f"{report.pairs} labelled pairs, embedder {report.embedding_model}",
        f"{'threshold':>9}  {'false hits (no guard)':>22}  {'near-dup':>8}  {'paraphr.':>8}"
        f"  {'false hits (guard)':>19}  {'near-dup':>8}  {'paraphr.':>8}",
    ]
    for plain in (r for r in report.results if not r.guarded):
        with_guard = report.result(plain.threshold, guarded=True)
        if with_guard is not None:
            lines.append(_table_line(plain, with_guard))
    lines.append(_recommendation_line(report, guarded=False))
    lines.append(_recommendation_line(report, guarded=True))
    return "\n".join(lines)
