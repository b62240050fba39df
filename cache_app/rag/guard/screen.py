"""Pluggable guards, and the screen one lookup runs its similarity candidates through."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

from cache_app.core import metrics
from cache_app.core.lograte import LogInterval
from cache_app.core.plugins import Plugins
from cache_app.rag.guard.features import (
    QueryFeatures,
    extract,
    extract_cached,
)
from cache_app.rag.guard.rules import (
    compare,
    lexical_near_duplicate,
)
from cache_app.rag.guard.vocabulary import (
    NEAR_DUPLICATE_FLOOR,
)

logger = logging.getLogger(__name__)

# The rejection reasons (the metric's label values): a plugged guard's other answers count as "other".
REASONS = ("negation", "antonym", "number", "identifier", "too_long", "error", "other")


# --- pluggable guards --------------------------------------------------------------------------


class HitGuard(Protocol):
    """What ``MGECACHE['RAG_HIT_GUARD']`` names: a class with a no-argument constructor."""

    def prepare(self, query: str) -> Any:
        """Work done once per lookup on the lookup's own query."""

    def check(self, prepared: Any, candidate_query: str) -> str | None:
        """None to accept the candidate, else a reason (one of REASONS; others count as "other")."""


class NearDuplicateGuard(HitGuard, Protocol):
    """A guard that also recognises lexical near-duplicates (served down to NEAR_DUPLICATE_FLOOR)."""

    def near_duplicate(self, prepared: Any, candidate_query: str) -> bool:
        """True when the candidate is the lookup's query but for case, punctuation, order, filler, a typo."""


class RuleGuard:
    """The default guard: the rules of this package (features compared by :func:`.rules.compare`)."""

    def prepare(self, query: str) -> QueryFeatures:
        return extract(query)

    def check(self, prepared: QueryFeatures, candidate_query: str) -> str | None:
        return compare(prepared, extract_cached(candidate_query))

    def near_duplicate(self, prepared: QueryFeatures, candidate_query: str) -> bool:
        return lexical_near_duplicate(prepared, extract_cached(candidate_query))


class NoGuard:
    """Accepts every candidate (what ``similarity_guard = False`` amounts to)."""

    def prepare(self, query: str) -> None:
        return None

    def check(self, prepared: Any, candidate_query: str) -> str | None:
        return None


_guards: Plugins[HitGuard] = Plugins(
    "RAG_HIT_GUARD", "Hit guard", ("prepare()", "check()"), "cache_app.rag.guard.HitGuard"
)


def load_guard(path: str | None = None) -> HitGuard:
    """The guard named by ``path`` (default ``MGECACHE['RAG_HIT_GUARD']``), one instance per process."""
    return _guards.load(path)


# --- one lookup's screen ------------------------------------------------------------------------

_REJECTIONS = {reason: metrics.RAG_SIMILARITY_REJECTIONS.labels(reason) for reason in REASONS}
_guard_error_log = LogInterval(60.0)


def _log_guard_error() -> None:
    if _guard_error_log.due():
        logger.exception("The RAG hit guard raised; the candidate is rejected (logged at most once a minute)")


class ShadowSink(Protocol):
    def record(self, *, query: str, cached_query: str, similarity: float, embedding_model: str, scope: Any) -> None: ...


class HitScreen:
    """Decides, for one lookup, which confirmed similarity candidate (if any) is served.

    ``search_threshold`` is what the index is asked for: the policy threshold, or
    NEAR_DUPLICATE_FLOOR when the guard can recognise near-duplicates. ``admit`` is then
    called for each confirmed candidate, best first:

    * at or above the policy threshold, the candidate is served unless the guard rejects it
      (counted by reason; the next one is tried);
    * below it (down to the floor), only a lexical near-duplicate the guard accepts is served;
    * in shadow mode the first candidate that would be served is recorded and counted, and
      the lookup ends as a miss (``settled``).
    """

    __slots__ = ("_near", "_prepared", "embedding_model", "guard", "query", "scope", "settled", "shadow", "threshold")

    def __init__(
        self,
        query: str,
        *,
        threshold: float,
        guard: HitGuard | None,
        shadow: ShadowSink | None = None,
        embedding_model: str = "",
        scope: Any = None,
    ) -> None:
        self.query = query
        self.threshold = threshold
        self.guard = guard
        self.shadow = shadow
        self.embedding_model = embedding_model
        self.scope = scope
        self.settled = False
        self._prepared: Any = None
        near = getattr(guard, "near_duplicate", None)
        self._near = near if callable(near) else None

    @property
    def search_threshold(self) -> float:
        return min(self.threshold, NEAR_DUPLICATE_FLOOR) if self._near is not None else self.threshold

    def _state(self) -> Any:
        if self._prepared is None:
            assert self.guard is not None
            self._prepared = self.guard.prepare(self.query)
        return self._prepared

    def reject_reason(self, candidate_query: str) -> str | None:
        if self.guard is None:
            return None
        try:
            reason = self.guard.check(self._state(), candidate_query)
        except Exception:
            _log_guard_error()
            return "error"
        if reason is None:
            return None
        return reason if reason in _REJECTIONS else "other"

    def _near_duplicate(self, candidate_query: str) -> bool:
        try:
            return bool(self._near is not None and self._near(self._state(), candidate_query))
        except Exception:
            _log_guard_error()
            return False

    def servable(self, candidate_query: str, similarity: float) -> bool:
        """Whether the candidate may be served (counts a rejection of a candidate above the threshold)."""
        reason = self.reject_reason(candidate_query)
        if similarity >= self.threshold:
            if reason is not None:
                _REJECTIONS[reason].inc()
                return False
            return True
        return reason is None and self._near_duplicate(candidate_query)

    def admit(self, candidate_query: str, similarity: float) -> bool:
        """True to serve this candidate; False to try the next (or, once settled, to miss)."""
        if self.settled or not self.servable(candidate_query, similarity):
            return False
        if self.shadow is not None:
            self.settled = True
            metrics.RAG_SIMILARITY_SHADOW_HITS.inc()
            self.shadow.record(
                query=self.query,
                cached_query=candidate_query,
                similarity=similarity,
                embedding_model=self.embedding_model,
                scope=self.scope,
            )
            return False
        return True


OPEN_SCREEN = HitScreen("", threshold=0.0, guard=None)  # a placeholder until the lookup sets its own


def screen_for(query: str, policy: Any, *, embedding_model: str = "", scope: Any = None) -> HitScreen:
    """The screen of one lookup, from the live RAG policy (threshold, similarity_guard, similarity_shadow)."""
    guarded = getattr(policy, "similarity_guard", True)
    shadow = None
    if getattr(policy, "similarity_shadow", False):
        from cache_app.rag.shadow import get_shadow_recorder

        shadow = get_shadow_recorder()
    return HitScreen(
        query,
        threshold=policy.similarity_threshold,
        guard=load_guard() if guarded else None,
        shadow=shadow,
        embedding_model=embedding_model,
        scope=scope,
    )


class _Scored(Protocol):
    @property
    def score(self) -> float: ...


T = TypeVar("T", bound=_Scored)


def candidate_batches(candidates: Sequence[T], screen: HitScreen, size: int, rounds: int) -> Iterator[Sequence[T]]:
    """The candidates, best first, ``size`` per confirmation round trip, at most ``rounds`` trips.

    Candidates below the policy threshold (possible near-duplicates) fill at most one batch.
    Stops once the screen has settled the lookup (shadow mode): no round trip is made for
    candidates that cannot be served.
    """
    strong = sum(1 for c in candidates if c.score >= screen.threshold)
    chosen = candidates[: min(len(candidates), strong + size)]
    for number in range(rounds):
        if screen.settled:
            return
        batch = chosen[number * size : (number + 1) * size]
        if not batch:
            return
        yield batch
