"""The comparison of two queries' features: the reason they disagree, or whether one is a near-duplicate."""

from __future__ import annotations

from cache_app.rag.guard.features import (
    QueryFeatures,
    extract,
)
from cache_app.rag.guard.vocabulary import (
    NEGATING_PREFIXES,
)

# --- the comparison --------------------------------------------------------------------------


def _contained(phrases: tuple[str, ...], text: str) -> bool:
    return all(f" {phrase} " in text for phrase in phrases)


def _same_roles(mine: tuple[str, ...], theirs: tuple[str, ...], a: QueryFeatures, b: QueryFeatures) -> bool:
    """The numbers (or identifiers) both queries name keep their roles.

    In the same order they do; in another order only if each still follows the same word (a
    phrase moved whole: "in wave 3, what does atom 5 do" / "what does atom 5 do in wave 3").
    "Is 4.3 newer than 3.4" / "is 3.4 newer than 4.3" swaps them.
    """
    if len(mine) < 2 or len(theirs) < 2:
        return True
    common = set(mine) & set(theirs)
    if [x for x in mine if x in common] == [x for x in theirs if x in common]:
        return True
    return all(a.labels.get(x) == b.labels.get(x) for x in common)


def _opposed(a: QueryFeatures, b: QueryFeatures) -> bool:
    """Opposite terms: one query uses a term of a group more often than the other, which uses
    another term of it more; or both use the same terms of a group in another order (from X to
    Y / to X from Y)."""
    if a.poles and b.poles:
        mine = {(g, p): n for g, p, n in a.poles}
        theirs = {(g, p): n for g, p, n in b.poles}
        for group in {g for g, _ in mine} & {g for g, _ in theirs}:
            if _group_opposed(group, mine, theirs, a.pole_order, b.pole_order):
                return True
    return _prefix_opposed(a.words - b.words, b.words) or _prefix_opposed(b.words - a.words, a.words)


def _group_opposed(
    group: int,
    mine: dict[tuple[int, int], int],
    theirs: dict[tuple[int, int], int],
    my_order: tuple[tuple[int, int, str], ...],
    their_order: tuple[tuple[int, int, str], ...],
) -> bool:
    poles = {k for k in mine if k[0] == group} | {k for k in theirs if k[0] == group}
    more_mine = any(mine.get(k, 0) > theirs.get(k, 0) for k in poles)
    more_theirs = any(theirs.get(k, 0) > mine.get(k, 0) for k in poles)
    if more_mine or more_theirs:
        return more_mine and more_theirs
    if len(poles) < 2:
        return False
    my_terms = [t for t in my_order if t[0] == group]
    their_terms = [t for t in their_order if t[0] == group]
    # Another order is fine if each term still governs the same word (a phrase moved whole).
    return [t[:2] for t in my_terms] != [t[:2] for t in their_terms] and sorted(my_terms) != sorted(their_terms)


def _prefix_opposed(only_here: frozenset[str], there: frozenset[str]) -> bool:
    for word in only_here:
        for prefix, shortest in NEGATING_PREFIXES:
            if len(word) >= shortest and f"{prefix}{word}" in there:
                return True
    return False


def compare(a: QueryFeatures, b: QueryFeatures) -> str | None:
    """None when the two queries agree on every rule, else the first rule they disagree on."""
    if a.too_long or b.too_long:
        return "too_long"
    if a.negations != b.negations:
        return "negation"
    if _opposed(a, b):
        return "antonym"
    if not (
        _contained(a.numbers, b.text) and _contained(b.numbers, a.text) and _same_roles(a.numbers, b.numbers, a, b)
    ):
        return "number"
    if not (
        _contained(a.identifiers, b.text)
        and _contained(b.identifiers, a.text)
        and _same_roles(a.identifiers, b.identifiers, a, b)
    ):
        return "identifier"
    if (a.raw_quotes or b.raw_quotes) and not _raw_agree(a, b):
        return "identifier"
    return None


def _typo(x: str, y: str) -> bool:
    """``y`` is ``x`` with two neighbouring letters swapped, or one letter dropped or added.

    Both words have 5+ letters and keep their first letter; a letter dropped or added keeps
    the last two letters, so inflections (cache/cached, route/router, file/files) are not
    typos. A changed letter is never a typo here: lines/links, tests/texts are other words.
    """
    if len(x) < 5 or len(y) < 5 or x[0] != y[0] or not (x.isalpha() and y.isalpha()):
        return False
    if len(x) == len(y):
        diff = [i for i in range(len(x)) if x[i] != y[i]]
        return len(diff) == 2 and diff[1] == diff[0] + 1 and x[diff[0]] == y[diff[1]] and x[diff[1]] == y[diff[0]]
    short, long_ = (x, y) if len(x) < len(y) else (y, x)
    if len(long_) - len(short) != 1 or x[-2:] != y[-2:]:
        return False
    return any(long_[:i] + long_[i + 1 :] == short for i in range(1, len(long_) - 2))


def lexical_near_duplicate(a: QueryFeatures, b: QueryFeatures) -> bool:
    """The same words, but for case, punctuation, order, FILLER_WORDS and one typo (see _typo)."""
    if a.too_long or b.too_long or len(a.content) < 2:
        return False
    if a.content == b.content:
        return True
    if len(a.content) != len(b.content) or len(a.content) < 3:
        return False
    only_a = list(a.content)
    only_b: list[str] = []
    for word in b.content:
        if word in only_a:
            only_a.remove(word)
        else:
            only_b.append(word)
    return len(only_a) == 1 and len(only_b) == 1 and _typo(only_a[0], only_b[0])


def _raw_agree(a: QueryFeatures, b: QueryFeatures) -> bool:
    """Quoted strings without letters or digits ("*", "->") must appear in the other query's text."""
    other_a = a.lowered or a.text
    other_b = b.lowered or b.text
    return all(q in other_b for q in a.raw_quotes) and all(q in other_a for q in b.raw_quotes)


def disagreement(a: str, b: str) -> str | None:
    """Why two query texts may not share a cached retrieval, or None when they may."""
    return compare(extract(a), extract(b))
