"""The rules' vocabulary: negations, number words, opposites and their inflections, filler words."""

from __future__ import annotations

import re

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
REWRITES: dict[str, tuple[str, ...]] = {**{w: (v,) for w, v in WORD_VALUES.items()}, **MULTIPLES, **EXPANSIONS}

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
