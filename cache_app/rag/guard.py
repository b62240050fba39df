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
"""

from __future__ import annotations

import logging
import re
import threading
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from cache_app.core import conf, metrics

logger = logging.getLogger(__name__)

# Longer queries are not compared (a similarity miss): bounds the guard's work per candidate.
MAX_CHARS = 2000
# Stored queries whose features are memoised per process, and the longest one memoised:
# at most about 2048 x 4 KB of memory (typical code-search questions take under 2 KB).
FEATURE_CACHE_SIZE = 2048
MEMO_MAX_CHARS = 256
# The rejection reasons (the metric's label values): a plugged guard's other answers count as "other".
REASONS = ("negation", "antonym", "number", "identifier", "too_long", "error", "other")

# --- the rules' vocabulary -----------------------------------------------------------------

NEGATIONS = frozenset({"not", "no", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "non"})
# Words rewritten before counting: contractions typed without an apostrophe, and "without".
EXPANSIONS = {
    "cannot": ("can", "not"),
    "without": ("with", "not"),
    **{
        f"{stem}t": (stem[:-1], "not")
        for stem in (
            "don",
            "doesn",
            "didn",
            "isn",
            "aren",
            "wasn",
            "weren",
            "hasn",
            "haven",
            "hadn",
            "shouldn",
            "couldn",
            "wouldn",
            "mustn",
            "needn",
            "ain",
        )
    },
    "dont": ("do", "not"),
    "cant": ("can", "not"),
    "wont": ("will", "not"),
}
_UNITS = (
    ("zero", "0"), ("two", "2"), ("three", "3"), ("four", "4"), ("five", "5"), ("six", "6"), ("seven", "7"),
    ("eight", "8"), ("nine", "9"), ("ten", "10"), ("eleven", "11"), ("twelve", "12"), ("thirteen", "13"),
    ("fourteen", "14"), ("fifteen", "15"), ("sixteen", "16"), ("seventeen", "17"), ("eighteen", "18"),
    ("nineteen", "19"), ("twenty", "20"),
)  # fmt: skip
NUMBER_WORDS = dict(_UNITS)
NUMBER_WORDS.update(
    {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90"}
)
NUMBER_WORDS.update({"hundred": "100", "thousand": "1000", "million": "1000000", "billion": "1000000000"})
# "one" is compared as 1 when both sides have a number, but never required on its own.
WORD_VALUES = {**NUMBER_WORDS, "one": "1"}
MULTIPLES = {"twice": ("2", "times"), "thrice": ("3", "times")}
_REWRITE: dict[str, tuple[str, ...]] = {**{w: (v,) for w, v in WORD_VALUES.items()}, **MULTIPLES, **EXPANSIONS}

# Groups of mutually exclusive terms. Each inner tuple is one pole (synonyms); regular
# inflections (-s, -es, -ed, -d, -ing, -er, -est) of each term are added automatically.
OPPOSITES: tuple[tuple[tuple[str, ...], ...], ...] = (
    (("ascending", "ascend", "asc"), ("descending", "descend", "desc")),
    (("increase", "increasing"), ("decrease", "decreasing")),
    (("increment",), ("decrement",)),
    (("enable", "activate"), ("disable", "deactivate")),
    (
        ("add", "insert", "append", "create", "make", "made", "addition", "insertion", "creation"),
        ("remove", "delete", "drop", "erase", "destroy", "removal", "deletion"),
    ),
    (("before", "prior", "previous", "prev", "preceding"), ("after", "next", "following", "subsequent")),
    (
        ("min", "minimum", "minimal", "smallest", "lowest", "least", "fewest"),
        ("max", "maximum", "maximal", "largest", "highest", "most"),
    ),
    (("minimize", "minimise"), ("maximize", "maximise")),
    (("first", "earliest", "oldest"), ("last", "latest", "newest")),
    (("old", "older"), ("new", "newer")),
    (("start", "begin", "beginning", "began", "begun"), ("stop", "end", "finish", "halt")),
    (("open",), ("close",)),
    (("push",), ("pop",)),
    (("push",), ("pull",)),
    (("encode",), ("decode",)),
    (("encrypt",), ("decrypt",)),
    (("serialize", "serialise", "marshal"), ("deserialize", "deserialise", "unmarshal")),
    (("compress", "zip"), ("decompress", "unzip")),
    (("import",), ("export",)),
    (("upload",), ("download",)),
    (("upgrade",), ("downgrade",)),
    (("upstream",), ("downstream",)),
    (("up",), ("down",)),
    (("on",), ("off",)),
    (("input", "inbound", "ingress"), ("output", "outbound", "egress")),
    (("read", "reader"), ("write", "writer", "wrote", "written")),
    (("get", "getter", "got", "gotten"), ("set", "setter")),
    (("set",), ("unset",)),
    (("sync", "synchronous", "synchronously"), ("async", "asynchronous", "asynchronously")),
    (("public",), ("private",)),
    (("allow", "permit", "whitelist", "allowlist"), ("deny", "forbid", "block", "blacklist", "denylist")),
    (("accept",), ("reject",)),
    (("grant",), ("revoke",)),
    (("include", "inclusive"), ("exclude", "exclusive")),
    (("show", "shown", "display"), ("hide", "hidden")),
    (("lock",), ("unlock",)),
    (("true",), ("false",)),
    (("upper", "uppercase"), ("lower", "lowercase")),
    (("left",), ("right",)),
    (("top",), ("bottom",)),
    (("head",), ("tail",)),
    (("prefix",), ("suffix",)),
    (("above",), ("below",)),
    (("more", "greater", "larger", "bigger", "longer", "higher"), ("less", "fewer", "smaller", "shorter", "lower")),
    (("big", "large", "long", "high"), ("small", "little", "short", "low")),
    (("fast", "faster", "fastest"), ("slow", "slower", "slowest")),
    (("send", "sent", "sender"), ("receive", "receiver")),
    (("redo",), ("undo",)),
    (("request",), ("response",)),
    (("client",), ("server",)),
    (("frontend",), ("backend",)),
    (("success", "succeed", "successful", "successfully"), ("failure", "fail", "failed", "unsuccessful", "error")),
    (("valid",), ("invalid",)),
    (("connect",), ("disconnect",)),
    (("login", "signin"), ("logout", "signout")),
    (("install",), ("uninstall",)),
    (("subscribe", "subscriber"), ("unsubscribe",)),
    (("publish", "publisher", "producer", "produce"), ("consume", "consumer")),
    (("enqueue",), ("dequeue",)),
    (("attach",), ("detach",)),
    (("mount",), ("unmount",)),
    (("load",), ("unload",)),
    (("expand",), ("collapse",)),
    (("pause", "suspend"), ("resume",)),
    (("lazy", "lazily"), ("eager", "eagerly")),
    (("blocking",), ("nonblocking",)),
    (("local",), ("remote",)),
    (("local",), ("global",)),
    (("internal",), ("external",)),
    (("inner",), ("outer",)),
    (("static",), ("dynamic",)),
    (("optional",), ("required", "mandatory")),
    (("parent", "ancestor"), ("child", "children", "descendant")),
    (("master", "primary", "leader"), ("replica", "secondary", "follower", "slave")),
    (("horizontal", "horizontally"), ("vertical", "vertically")),
    (("positive",), ("negative",)),
    (("plus",), ("minus",)),
    (("same", "equal", "identical"), ("different", "unequal", "distinct")),
    (("row",), ("column",)),
    (("source", "src"), ("destination", "dest", "dst", "target")),
    (("to", "into", "onto", "toward", "towards"), ("from",)),
    (("tcp",), ("udp",)),
    (("json",), ("yaml", "yml"), ("xml",), ("csv",), ("toml",)),
    (
        ("millisecond", "ms"),
        ("second", "sec"),
        ("minute",),
        ("hour",),
        ("day", "daily"),
        ("week", "weekly"),
        ("month", "monthly"),
        ("year", "yearly"),
    ),
    (("byte",), ("kilobyte", "kb"), ("megabyte", "mb"), ("gigabyte", "gb")),
    (("first",), ("second",), ("third",), ("fourth",), ("fifth",), ("last",)),
)
# Words that do not change what a question asks: articles and conversational filler. Two
# queries whose other words are the same (in any order, case and punctuation) are lexical
# near-duplicates.
FILLER_WORDS = frozenset(
    {
        "a", "an", "the", "please", "pls", "plz", "thanks", "thank", "thx", "hey", "hi", "hello", "so", "well", "ok",
        "okay", "basically", "actually", "just", "really", "btw", "exactly", "kindly", "quick", "question",
        "wondering", "wonder", "tell", "me", "i", "you", "was", "if", "can", "help",
    }
)  # fmt: skip
# A near-duplicate is served down to this similarity (the index scores every row at or above
# 0.9 exactly anyway, so searching there costs no more than at 0.95).
NEAR_DUPLICATE_FLOOR = 0.9
# A word that differs from a word of the other query by one of these prefixes is its opposite
# (prefix, shortest stem): unlock/lock, invalid/valid, deserialize/serialize.
# Regular forms that are other words (a "setting" is not an act of setting).
NOT_INFLECTIONS = frozenset(
    {
        "setting",
        "settings",
        "offer",
        "offers",
        "offered",
        "header",
        "headers",
        "news",
        "lasting",
        "closer",
        "closest",
        "ender",
    }
)
NEGATING_PREFIXES = (("un", 3), ("dis", 3), ("non", 3), ("de", 4), ("in", 4), ("im", 4), ("il", 4), ("ir", 4))


def _inflections(term: str) -> set[str]:
    forms = {term, f"{term}s", f"{term}es", f"{term}ed", f"{term}d", f"{term}ing", f"{term}er", f"{term}est"}
    if term.endswith("e"):
        forms.add(f"{term[:-1]}ing")
    if term.endswith("y"):
        forms.update({f"{term[:-1]}ies", f"{term[:-1]}ied"})
    if len(term) <= 4 and re.fullmatch(r"[a-z]*[^aeiou][aeiou][bdgklmnprt]", term):
        forms.update({f"{term}{term[-1]}ed", f"{term}{term[-1]}ing", f"{term}{term[-1]}er"})  # stop -> stopped
    return forms


def _build_poles() -> dict[str, tuple[tuple[int, int], ...]]:
    """word -> ((group, bit), ...). Exact terms win over inflections of another term."""
    exact: dict[str, set[tuple[int, int]]] = {}
    inflected: dict[str, set[tuple[int, int]]] = {}
    for group, poles in enumerate(OPPOSITES):
        for pole, terms in enumerate(poles):
            for term in terms:
                exact.setdefault(term, set()).add((group, 1 << pole))
                for form in _inflections(term) - {term} - NOT_INFLECTIONS:
                    inflected.setdefault(form, set()).add((group, 1 << pole))
    table = {word: tuple(sorted(entries)) for word, entries in inflected.items() if word not in exact}
    table.update({word: tuple(sorted(entries)) for word, entries in exact.items()})
    return table


POLES = _build_poles()

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
        rewrite = _REWRITE.get(word)
        if rewrite is not None:
            out.extend(rewrite)
        elif word[0] == "v" and word[1:].isdigit():
            out.append(word[1:])
        else:
            out.append(word)
    return out


Item = tuple[str, str]  # (a number or identifier as space-joined words, the word before it)


def _plain(word: str, words: list[str], numbers: list[Item]) -> None:
    rewrite = _REWRITE.get(word)
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
    append, rewrites = words.append, _REWRITE  # locals: this loop runs once per token of every query
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
    """The features of one query (pure; see the module docstring for the rules)."""
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
    """The default guard: the rules of this module."""

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


_guards: dict[str, HitGuard] = {}
_guards_lock = threading.Lock()


def load_guard(path: str | None = None) -> HitGuard:
    """The guard named by ``path`` (default ``MGECACHE['RAG_HIT_GUARD']``), one instance per process."""
    path = path or conf.get("RAG_HIT_GUARD")
    guard = _guards.get(path)
    if guard is not None:
        return guard
    with _guards_lock:
        if path not in _guards:
            try:
                cls = import_string(path)
            except ImportError as exc:
                raise ImproperlyConfigured(f"MGECACHE['RAG_HIT_GUARD'] = {path!r} cannot be imported: {exc}") from exc
            instance = cls()
            for attr in ("prepare", "check"):
                if not callable(getattr(instance, attr, None)):
                    raise ImproperlyConfigured(f"Hit guard {path!r} has no {attr}(); see cache_app.rag.guard.HitGuard.")
            _guards[path] = instance
        return _guards[path]


# --- one lookup's screen ------------------------------------------------------------------------

_REJECTIONS = {reason: metrics.RAG_SIMILARITY_REJECTIONS.labels(reason) for reason in REASONS}
_ERROR_LOG_SECONDS = 60.0
_last_error_log = 0.0


def _log_guard_error() -> None:
    global _last_error_log
    now = time.monotonic()
    if now - _last_error_log >= _ERROR_LOG_SECONDS:
        _last_error_log = now
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
