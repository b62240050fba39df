"""What the guard compares, extracted from one query text: words, numbers, identifiers, negations, poles."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from cache_app.rag.guard.vocabulary import (
    FILLER_WORDS,
    NEGATIONS,
    POLES,
    REWRITES,
)

# Longer queries are not compared (a similarity miss): bounds the guard's work per candidate.
MAX_CHARS = 2000
# Stored queries whose features are memoised per process, and the longest one memoised:
# at most about 2048 x 4 KB of memory (typical code-search questions take under 2 KB).
FEATURE_CACHE_SIZE = 2048
MEMO_MAX_CHARS = 256

# --- the extraction --------------------------------------------------------------------------

_QUOTED = re.compile(r'"([^"\n]{1,200})"|“([^”\n]{1,200})”|`([^`\n]{1,200})`|(?<!\w)\'([^\'\n]{1,200})\'(?!\w)')
# A code-ish run: word characters joined by path/namespace punctuation, with an optional
# leading path or flag marker and an optional call suffix.
_TOKEN = re.compile(r"(?<!\w)(--?(?=[A-Za-z])|[./~\\]+(?=\w))?(\w+(?:(?:[./\\:]+|->)\w+)*)(\(\))?")
_WORD = re.compile(r"\w+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NT = re.compile(r"n['\u2019]t\b", re.IGNORECASE)
_LEFT_PUNCTUATION = "([{<\"'`\u201c\u2018"
_RIGHT_PUNCTUATION = ".,;:!?)]}>\"'`\u201d\u2019"
_MAY_QUOTE = re.compile("[\"'`\u201c]")


@dataclass(frozen=True, slots=True)
class QueryFeatures:
    """What the guard compares, for one query."""

    text: str  # " w1 w2 ... ": normalised words with sentinel spaces (for contiguous containment)
    words: frozenset[str]
    numbers: tuple[str, ...]  # space-joined digit sequences that must appear in the other text
    identifiers: tuple[str, ...]  # space-joined word sequences that must appear in the other text
    labels: dict[str, str]  # number or identifier -> the word before its first occurrence
    raw_quotes: tuple[str, ...]  # quoted strings without word characters (compared as text)
    lowered: str  # the casefolded query, kept only when it has raw_quotes
    negations: int
    poles: tuple[tuple[int, int, int], ...]  # (group, pole bit, how many times), sorted
    pole_order: tuple[tuple[int, int, str], ...]  # (group, pole bit, the word after it), in text order
    content: tuple[str, ...]  # the words without FILLER_WORDS, sorted (for lexical near-duplicates)
    too_long: bool = False


_TOO_LONG = QueryFeatures(" ", frozenset(), (), (), {}, (), "", 0, (), (), (), True)


def _words(text: str) -> list[str]:
    """Normalised words: "without" and typed-out contractions expanded, number words as digits, ``v2`` as ``2``."""
    out: list[str] = []
    for word in _WORD.findall(text):
        rewrite = REWRITES.get(word)
        if rewrite is not None:
            out.extend(rewrite)
        elif word[0] == "v" and word[1:].isdigit():
            out.append(word[1:])
        else:
            out.append(word)
    return out


Item = tuple[str, str]  # (a number or identifier as space-joined words, the word before it)


def _plain(word: str, words: list[str], numbers: list[Item]) -> None:
    rewrite = REWRITES.get(word)
    if rewrite is None:
        words.append(word)
        return
    if rewrite[0].isdigit() and word != "one":
        numbers.append((rewrite[0], words[-1] if words else ""))
    words.extend(rewrite)


def _tokens(source: str) -> tuple[list[str], list[Item], list[Item]]:
    """(words, numbers, identifiers) in one pass over the original-case text.

    A token is code unless it is a plain word (all letters, lower case or capitalised): digits,
    underscores, inner capitals, ALLCAPS, joining punctuation, a flag dash or a call suffix make
    it code. Numbers and identifiers are space-joined normalised word sequences, each with the
    word before it (what it is the number of: "wave 3", "version 2.1"). Most tokens are plain
    words: they are recognised with string methods, and only the rest go through the token
    expression.
    """
    words: list[str] = []
    numbers: list[Item] = []
    identifiers: list[Item] = []
    append, rewrites = words.append, REWRITES  # locals: this loop runs once per token of every query
    for chunk in source.split():
        token = chunk.lstrip(_LEFT_PUNCTUATION).rstrip(_RIGHT_PUNCTUATION)
        if token.isalpha() and (token.islower() or token.istitle()):
            word = token.casefold()
            if word in rewrites:
                _plain(word, words, numbers)
            else:
                append(word)
            continue
        for marker, body, call in _TOKEN.findall(chunk):
            if not marker and not call and body.isalpha() and (body.islower() or body.istitle()):
                _plain(body.casefold(), words, numbers)
                continue
            parts = _words(body.casefold())
            if parts:
                item = (" ".join(parts), words[-1] if words else "")
                (numbers if all(p.isdigit() for p in parts) else identifiers).append(item)
                words.extend(parts)
    return words, numbers, identifiers


def _first(items: list[Item]) -> dict[str, str]:
    """Each item once (its first occurrence, in order), with its label."""
    out: dict[str, str] = {}
    for phrase, label in items:
        out.setdefault(phrase, label)
    return out


def _quotes(source: str) -> tuple[list[str], list[str]]:
    phrases: list[str] = []
    raw: list[str] = []
    for groups in _QUOTED.findall(source):
        content = next(g for g in groups if g)
        parts = _words(content.casefold())
        if parts:
            phrases.append(" ".join(parts))
        elif content.strip():
            raw.append(content.strip().casefold())
    return phrases, raw


def extract(query: str) -> QueryFeatures:
    """The features of one query (pure; the rules are in the package docstring, cache_app.rag.guard)."""
    if len(query) > MAX_CHARS:
        return _TOO_LONG
    source = query if query.isascii() else unicodedata.normalize("NFKC", query)
    if "," in source:
        source = _THOUSANDS.sub("", source)
    if "'" in source or "\u2019" in source:
        source = _NT.sub(" not", source)
    words, numbers, identifiers = _tokens(source)
    quoted, raw = _quotes(source) if _MAY_QUOTE.search(source) else ((), ())
    poles: dict[tuple[int, int], int] = {}
    order: list[tuple[int, int, str]] = []
    for i, word in enumerate(words):
        if word in POLES:
            after = words[i + 1] if i + 1 < len(words) else ""
            for key in POLES[word]:
                poles[key] = poles.get(key, 0) + 1
                order.append((*key, after))
    number_items = _first(numbers)
    identifier_items = _first([*identifiers, *((q, "") for q in quoted)])
    return QueryFeatures(
        text=f" {' '.join(words)} ",
        words=frozenset(words),
        numbers=tuple(number_items),
        identifiers=tuple(identifier_items),
        labels={**number_items, **identifier_items},
        raw_quotes=tuple(raw),
        lowered=source.casefold() if raw else "",
        negations=sum(1 for w in words if w in NEGATIONS),
        poles=tuple(sorted((group, bit, count) for (group, bit), count in poles.items())),
        pole_order=tuple(order),
        content=tuple(sorted(w for w in words if w not in FILLER_WORDS)),
    )


@lru_cache(maxsize=FEATURE_CACHE_SIZE)
def _memoised(query: str) -> QueryFeatures:
    return extract(query)


def extract_cached(query: str) -> QueryFeatures:
    """``extract``, memoised for queries up to MEMO_MAX_CHARS: stored queries are compared again and again."""
    return _memoised(query) if len(query) <= MEMO_MAX_CHARS else extract(query)


def clear_feature_cache() -> None:
    """Forget the memoised features (benchmarks measure the first comparison this way)."""
    _memoised.cache_clear()
