"""The similarity hit guard: a similar query must mean the same thing before it is served.

An embedding scores "How do I NOT configure X" at 0.96-0.98 against "How do I configure X",
and about as high "masterplan 7" against "masterplan 8", or "ascending" against
"descending". A similarity hit would then hand one question's retrieved code context to
another. The guard looks at the two query *texts* and rejects a candidate unless they agree on:

* **numbers**: every number of one query appears in the other, in the same order
  (``2.1`` is not ``1.2``, "4.3 newer than 3.4" is not "3.4 newer than 4.3"; ``v2`` is
  ``2``; ``10,000`` is ``10000``; the words ``two``..``billion`` and ``twice`` are numbers;
  ``one`` is not required, it is usually a pronoun);
* **code identifiers**: ``snake_case``, ``CamelCase``, ``ALLCAPS`` (commands, acronyms),
  dotted paths, file paths, ``--flags``, ``calls()``, tokens mixing letters and digits and
  quoted strings ("..", '..', `..`) of one query appear in the other, in the same order.
  The comparison ignores case and punctuation, so a near-duplicate that only changes those
  still agrees; a typo inside an identifier does not (it may be another name);
* **negation**: both hold the same number of ``not``/``n't`` (also typed ``doesnt``)/
  ``never``/``no``/``none``/``nothing``/``nobody``/``nowhere``/``neither``/``nor``/``non``/
  ``cannot``/``without`` (``without`` counts as ``with`` + a negation, so "without a cursor"
  agrees with "with no cursor");
* **opposites**: for every group in :data:`OPPOSITES` (antonyms such as ascending/descending,
  enable/disable, add/remove, before/after, min/max, create/delete, to/from, and a few
  mutually exclusive alternatives such as time units or data formats, with their regular
  inflections), one query may not use a term more often than the other while the other
  uses an opposite term more often, nor use the same terms in another order ("from A to B"
  / "to A from B"). A term on one side only ("sort the rows" / "sort the rows ascending")
  is allowed. Words that differ only by a negating prefix (``un``, ``dis``, ``non``, ``de``,
  ``in``, ``im``, ``il``, ``ir``: lock/unlock, valid/invalid) are opposites too.

A candidate the guard accepts is served at or above the policy threshold, and down to
NEAR_DUPLICATE_FLOOR when it is a *lexical* near-duplicate of the query: the same words in
any order, case and punctuation, but for FILLER_WORDS and one typo (see ``_typo``).

The rules are about the language of questions, not a word list fitted to a data set;
benchmarks/similarity_pairs.jsonl measures them and the unit tests use other wording.

Cost: features of the lookup's query are computed once per lookup (only when there is a
candidate); features of stored queries up to MEMO_MAX_CHARS are memoised (a bounded LRU).
About 10-30 µs for a candidate seen the first time, 5 µs after (docs/benchmarks.md).
Queries longer than MAX_CHARS are never served by similarity (reason ``too_long``).

The guard is pluggable: ``MGECACHE['RAG_HIT_GUARD']`` names a class whose instances have
``prepare(query) -> state``, ``check(state, candidate_query) -> reason | None`` and,
optionally, ``near_duplicate(state, candidate_query) -> bool``. It runs inside
``RAGQueryCache``'s lookup through a :class:`HitScreen`, so every caller (engine, API,
waves, gateway) gets it; ``CachePolicy.similarity_guard`` switches it off and
``CachePolicy.similarity_shadow`` turns similarity hits into recorded misses.

The package, in the order a comparison uses it: :mod:`.vocabulary` (the word lists), :mod:`.features`
(one query's features), :mod:`.rules` (two queries compared), :mod:`.screen` (the pluggable guard and
one lookup's screen over its candidates).
"""

from cache_app.rag.guard.features import (
    MAX_CHARS,
    MEMO_MAX_CHARS,
    QueryFeatures,
    clear_feature_cache,
    extract,
    extract_cached,
)
from cache_app.rag.guard.rules import compare, disagreement, lexical_near_duplicate
from cache_app.rag.guard.screen import (
    OPEN_SCREEN,
    REASONS,
    HitGuard,
    HitScreen,
    NearDuplicateGuard,
    NoGuard,
    RuleGuard,
    ShadowSink,
    candidate_batches,
    load_guard,
    screen_for,
)
from cache_app.rag.guard.vocabulary import FILLER_WORDS, NEAR_DUPLICATE_FLOOR, NEGATIONS, OPPOSITES

__all__ = [
    "FILLER_WORDS",
    "MAX_CHARS",
    "MEMO_MAX_CHARS",
    "NEAR_DUPLICATE_FLOOR",
    "NEGATIONS",
    "OPEN_SCREEN",
    "OPPOSITES",
    "REASONS",
    "HitGuard",
    "HitScreen",
    "NearDuplicateGuard",
    "NoGuard",
    "QueryFeatures",
    "RuleGuard",
    "ShadowSink",
    "candidate_batches",
    "clear_feature_cache",
    "compare",
    "disagreement",
    "extract",
    "extract_cached",
    "lexical_near_duplicate",
    "load_guard",
    "screen_for",
]
