"""Build benchmarks/similarity_pairs.jsonl: labelled code-search query pairs for the RAG similarity guard.

    .venv/bin/python benchmarks/similarity_pairs.py            # rewrites the .jsonl (deterministic, seed 7)
    .venv/bin/python benchmarks/similarity_pairs.py --check    # fails if the committed file is out of date

Every line is ``{"a": ..., "b": ..., "same": true|false, "kind": ..., "variant": ...}``:

* ``same: false`` (a cached retrieval for ``a`` must never answer ``b``):
  ``negation`` (not, n't, never, no, without), ``number`` (changed counts, ids, ports,
  codes), ``version`` (changed library or API versions), ``antonym`` (opposite terms),
  ``identifier`` (changed snake_case, CamelCase, dotted path, file path, quoted string,
  flag, command), ``changed_word`` (one ordinary word changed: no guard rule covers it, so
  these pairs bound how low a threshold can go) and ``unrelated`` (two different questions);
* ``same: true``: ``near_duplicate`` (variant: typo in a word of 7+ letters, casing,
  punctuation, word_order, one filler word), ``near_duplicate_hard`` (a typo in a word of 5-6
  letters, or a filler phrase: edits after which neither embedder reliably scores 0.9, kept
  apart so that their rate is visible rather than averaged in) and ``paraphrase`` (the same
  question in other words, hand-written).

How it is built: questions are filled from templates below with values drawn by a seeded
random generator; each labelled pair changes exactly one thing of its kind (the rest of the
question stays the same, which is what makes such pairs score high). Near-duplicates are
mechanical edits of a question: a typo in an ordinary word (never inside an identifier or
number: those are usually pasted, and a changed name may be another name), lower/upper
case, punctuation, a phrase moved to the front, filler words. The split between
``near_duplicate`` and ``near_duplicate_hard`` is by the edit (word length, filler length),
decided before measuring. Paraphrases are written by
hand. It is a development set: the guard (cache_app/rag/guard/) is written from rules
about questions, and tests/cache_app/rag/test_guard.py checks held-out wording.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "similarity_pairs.jsonl"
SEED = 7

FUNCTIONS = [
    "get_user_by_id",
    "parse_config",
    "load_documents",
    "invalidate_masterplan",
    "compute_similarity",
    "reclaim_dead_keys",
    "send_batch",
    "build_index",
    "refresh_token",
    "validate_payload",
    "render_template",
    "retry_request",
]
CLASSES = [
    "RAGQueryCache",
    "DocumentStore",
    "RequestBatcher",
    "LLMClient",
    "CircuitBreaker",
    "PolicySource",
    "UserSerializer",
    "PaymentGateway",
    "SessionManager",
    "TokenBucket",
]
MODULES = [
    "cache_app.rag.engine",
    "django.db.models",
    "os.path.join",
    "numpy.linalg.norm",
    "redis.asyncio.Redis",
    "celery.app.task",
    "batching_app.wave",
]
FILES = [
    "settings.py",
    "cache_app/rag/guard.py",
    "docs/rag_cache.md",
    "src/utils/date.ts",
    "config/redis.conf",
    "tests/conftest.py",
    "package.json",
    "Dockerfile",
]
TOPICS = [
    "the Redis cache TTL",
    "the Celery retry policy",
    "the database connection pool",
    "the JWT signing key",
    "the rate limiter",
    "the logging configuration",
    "the document store",
    "the embedding model",
    "the admin login page",
    "the batch window",
]
LIBS = [("Django", "5.2", "4.2"), ("Python", "3.11", "3.12"), ("Redis", "7.2", "6.2"), ("numpy", "2.1", "1.26")]
LIBS += [("Celery", "5.4", "5.3"), ("PostgreSQL", "15", "16"), ("the API", "v2", "v3"), ("redis-py", "5.0.1", "5.0.2")]

# --- different meaning ------------------------------------------------------------------------

NEGATIONS = [
    ("How do I configure {topic}?", "How do I not configure {topic}?"),
    ("Why does {func} return None for a valid id?", "Why doesn't {func} return None for a valid id?"),
    ("Is {func} idempotent?", "Is {func} not idempotent?"),
    ("Which tests call {func}?", "Which tests never call {func}?"),
    ("How can I run the worker with a result backend?", "How can I run the worker without a result backend?"),
    ("Can {cls} be used from async code?", "Can {cls} not be used from async code?"),
    ("Why is {topic} cached?", "Why is {topic} not cached?"),
    ("Should {cls} retry on a timeout?", "Should {cls} never retry on a timeout?"),
    ("Does {func} raise when the key is missing?", "Does {func} not raise when the key is missing?"),
    ("What happens when {cls} has a lock?", "What happens when {cls} has no lock?"),
    ("Where do we log errors from {func}?", "Where don't we log errors from {func}?"),
    ("How do I deploy with {file}?", "How do I deploy without {file}?"),
    ("Why does the migration run in a transaction?", "Why does the migration not run in a transaction?"),
    ("Which endpoints require authentication?", "Which endpoints do not require authentication?"),
    ("Is {topic} shared between processes?", "Is {topic} never shared between processes?"),
    ("Can a masterplan have documents?", "Can a masterplan have no documents?"),
    ("Why is the SCAN command used here?", "Why isn't the SCAN command used here?"),
    ("How do I test {cls} with a real Redis?", "How do I test {cls} without a real Redis?"),
    ("Does the cache store truncated answers?", "Does the cache never store truncated answers?"),
    ("Why can the worker acknowledge late tasks?", "Why can't the worker acknowledge late tasks?"),
    ("When is {func} called with a masterplan id?", "When is {func} called with no masterplan id?"),
    ("Are expired entries returned by the index?", "Are expired entries not returned by the index?"),
    ("How is {topic} validated at startup?", "How is {topic} not validated at startup?"),
    ("Does {cls} keep a connection open?", "Does {cls} not keep a connection open?"),
    ("Why should I use a cursor with COUNT?", "Why should I use a cursor without COUNT?"),
]
NUMBERS = [
    "Show the steps of masterplan {n}",
    "Why does the test fail after {n} retries?",
    "How do I limit a batch to {n} prompts?",
    "Set the cache TTL to {n} seconds in {file}",
    "Return the top {n} documents for a query",
    "What happens when the pool has more than {n} connections?",
    "Explain error code {n} from the payment API",
    "Which atoms belong to wave {n}?",
    "Why does line {n} of {file} raise a KeyError?",
    "Is port {n} open on the Redis container?",
    "Why does {func} time out after {n} ms?",
    "Split the document into chunks of {n} tokens",
    "Why are there {n} workers in the gunicorn config?",
    "Retry the request {w} times before giving up",
    "Which issue is ticket {n} about?",
    "Why does the index hold {n} rows after a rebuild?",
    "Keep the last {n} log segments",
    "How much does it cost to run {n} prompts through {cls}?",
    "Find the atom with id {n} in masterplan {n2}",
    "Reserve {w} slots in the batch window",
]
VERSIONS = [
    "What changed in {lib} {v}?",
    "Is {lib} {v} supported by mgecache?",
    "How do I upgrade to {lib} {v}?",
    "Does {func} work on {lib} {v}?",
    "Release notes for {lib} {v}",
    "Which deprecations does {lib} {v} bring?",
    "Are there breaking changes in {lib} {v} for {cls}?",
    "Install {lib} {v} in the Docker image",
]
ANTONYMS = [
    ("ascending", "descending", "Sort the cached entries in {x} order of similarity"),
    ("enable", "disable", "How do I {x} gzip compression in {file}?"),
    ("add", "remove", "How do I {x} a document to the store?"),
    ("before", "after", "Does {func} run {x} the migration?"),
    ("minimum", "maximum", "Find the {x} batch size allowed by the policy"),
    ("create", "delete", "How do I {x} a masterplan from the admin?"),
    ("with", "without", "Run the test suite {x} the slow tests"),
    ("first", "last", "Why is the {x} document of the result missing?"),
    ("import", "export", "{x} the pricing table as CSV"),
    ("encode", "decode", "How do I {x} the payload as base64 in {func}?"),
    ("start", "stop", "How do I {x} the Celery worker from the Makefile?"),
    ("open", "close", "When does {cls} {x} its connections?"),
    ("increase", "decrease", "How do I {x} the timeout of {cls}?"),
    ("upload", "download", "How do I {x} a file to the bucket?"),
    ("read", "write", "Which process can {x} the vector log?"),
    ("request", "response", "Where are the {x} headers logged?"),
    ("client", "server", "Is the token checked on the {x} side?"),
    ("public", "private", "Should {func} be {x}?"),
    ("allow", "deny", "How do I {x} requests from this origin?"),
    ("lock", "unlock", "How do I {x} the account after failed logins?"),
    ("valid", "invalid", "What does {func} return for an {x} token?"),
    ("serialize", "deserialize", "How does {cls} {x} its entries?"),
    ("push", "pull", "Why does git {x} fail in CI?"),
    ("upper", "lower", "Convert the keys to {x} case"),
    ("include", "exclude", "How do I {x} a directory from the coverage report?"),
    ("sync", "async", "Use the {x} client in {func}"),
    ("oldest", "newest", "Which entry does the index evict, the {x} one?"),
    ("input", "output", "Validate the {x} of {func}"),
    ("seconds", "minutes", "Why is the lock held for 30 {x}?"),
    ("JSON", "YAML", "How do I load the config from {x}?"),
    ("success", "failure", "Where is the {x} callback of {func} registered?"),
    ("true", "false", "Why is the enabled flag {x} by default?"),
]
IDENTIFIERS = [
    ("snake_case", "Where is {a} defined?", FUNCTIONS),
    ("snake_case", "Which module imports {a}?", FUNCTIONS),
    ("snake_case", "Why does {a} raise a ValueError?", FUNCTIONS),
    ("camel_case", "How do I configure {a} in the settings?", CLASSES),
    ("camel_case", "Show the tests for {a}", CLASSES),
    ("camel_case", "Why is {a} slow under load?", CLASSES),
    ("dotted_path", "What does {a} return?", MODULES),
    ("dotted_path", "Who calls {a} in this repository?", MODULES),
    ("file_path", "What is configured in {a}?", FILES),
    ("file_path", "Why does the linter complain about {a}?", FILES),
    ("quoted", 'Search the code for "{a}"', ["TODO", "FIXME", "XXX", "HACK", "deprecated"]),
    ("quoted", "Which log line contains '{a}'?", ["cache miss", "cache hit", "breaker open", "slow query"]),
    ("flag", "What does pytest {a} do?", ["-x", "-k", "-q", "--lf", "--pdb"]),
    ("flag", "Run manage.py migrate with {a}", ["--plan", "--fake", "--check", "--noinput"]),
    ("command", "How does the Redis {a} command work?", ["SCAN", "KEYS", "MGET", "GETRANGE", "UNLINK", "EXPIRE"]),
    ("call", "Why does {a} block the event loop?", ["time.sleep()", "requests.get()", "open()", "input()"]),
]
# One ordinary word changed (not an opposite, number or identifier): the guard has no rule
# for these, so they are what bounds how low the threshold can safely go.
CHANGED_WORDS = [
    ("Where are the {retries|timeouts} of {cls} configured?"),
    ("How do I configure the cache {eviction policy|serialization format}?"),
    ("Why does {func} return an empty list when the {cache is cold|database is down}?"),
    ("How do I write a {unit test|benchmark} for {func} with pytest?"),
    ("Which settings control the {embedding model|document store} in production?"),
    ("How can I make {func} {faster|use less memory} on large inputs?"),
    ("What permissions does the admin need to {edit|view} the batch window?"),
    ("How does {cls} decide when to {flush|grow} its buffer?"),
    ("Where is {cls} instantiated in the {request handling|task scheduling} code?"),
    ("Explain how {cls} handles {concurrent|malformed} requests"),
    ("How should {errors|warnings} from {func} be reported to the caller?"),
    ("Give me an example of calling {func} from a {Celery task|Django view}"),
    ("Why is the logging configuration reloaded on every {request|deploy}?"),
    ("What is the default value of the {timeout|password} in {file}?"),
    ("How do I {configure|rotate} the JWT signing key for the staging environment?"),
    ("How do I {paginate|filter} the admin list view?"),
    ("How do I {cache|log} the results of this query?"),
    ("Why is the Celery worker using so much {memory|disk space}?"),
    ("How do I {install|configure} the Redis client library?"),
    ("Which users can access the {admin|metrics} dashboard?"),
    ("How do I {rename|move} a file in {file}?"),
    ("Why is {cls} {slow|flaky} in the test suite?"),
]
# --- same meaning ---------------------------------------------------------------------------

QUESTIONS = [
    "How do I configure {topic} for the staging environment?",
    "Why does {func} return an empty list when the cache is cold?",
    "Where is {cls} instantiated in the request handling code?",
    "What does {module} return when the input is empty?",
    "How can I make {func} faster on large inputs?",
    "Which settings control {topic} in production?",
    "Explain how {cls} handles concurrent requests",
    "How do I write a unit test for {func} with pytest?",
    "What is the default value of the timeout in {file}?",
    "Why is {topic} reloaded on every request?",
    "How should errors from {func} be reported to the caller?",
    "Where are the retries of {cls} configured?",
    "Give me an example of calling {func} from a Celery task",
    "How does {cls} decide when to flush its buffer?",
    "What permissions does the admin need to edit {topic}?",
    "How do I migrate {topic} to a separate settings module?",
    "Which background tasks depend on {cls} at startup?",
    "What exceptions can {func} raise during deployment?",
    "How is {topic} documented for new developers?",
    "Where does {func} read its configuration from?",
    "How can I trace a slow request through {cls}?",
    "What does the comment above {func} mean?",
    "Which pull request introduced {cls} to the codebase?",
    "How do I disable logging inside {func} temporarily?",
    "Why does {cls} keep a reference to the request object?",
]
# One filler word (near_duplicate), or a filler phrase (near_duplicate_hard).
FILLER_WORDS = (
    ["Hey, ", "So, ", "Basically, ", "Actually, ", "Ok, "],
    [" please", ", thanks", " exactly", " btw", " thx"],
)
FILLER_PHRASES = (["Quick question: ", "Please tell me: ", "I was wondering, ", "Can you tell me: "], [" if you can"])
PARAPHRASES = [
    ("How can I iterate over all the keys in Redis?", "What is the way to loop through every Redis key?"),
    ("Where is the function that parses the config file?", "Which function parses the config file?"),
    ("How do I reset a user's password?", "What is the procedure to change a user's password?"),
    ("Why is my Celery task executed twice?", "What causes a Celery task to run two times?"),
    ("How do I make a Django model field optional?", "How can a Django model field be made optional?"),
    ("What does {cls} do?", "What is the purpose of {cls}?"),
    ("Where is {func} called from?", "Which code calls {func}?"),
    ("How do I speed up the test suite?", "How can the tests be made to run quicker?"),
    ("How do I read environment variables in Django settings?", "How can Django settings get values from env vars?"),
    ("Why does the page load so slowly?", "What makes the page take so long to load?"),
    ("How do I log every SQL query Django runs?", "How can I see all SQL queries executed by Django in the logs?"),
    ("What is the difference between a process and a thread?", "How does a process differ from a thread?"),
    ("How do I cancel a running Celery task?", "How can I abort a Celery task that is in progress?"),
    ("How do I find which commit introduced a bug?", "How can I locate the commit that caused a bug?"),
    ("Explain what {func} does", "What does {func} do?"),
    ("How do I mock {cls} in a test?", "How can I replace {cls} with a fake in tests?"),
    ("How do I paginate a DRF list endpoint?", "How can a DRF list view return results page by page?"),
    ("Why does {func} use a lock?", "What is the reason {func} takes a lock?"),
    ("How are embeddings stored in the database?", "In what form does the database keep embeddings?"),
    ("How do I profile memory usage of a Python process?", "How can I measure how much memory a Python process uses?"),
    ("How do I rename a column in a Django migration?", "How can a Django migration rename a column?"),
    ("What is a good way to handle timeouts in {cls}?", "How should {cls} deal with timeouts?"),
    ("Where do I configure CORS for the API?", "Which setting controls CORS for the API?"),
    ("How do I retry a failed HTTP request?", "How can a failed HTTP request be retried?"),
    ("How does the cache know an entry is stale?", "How does the cache detect that an entry is out of date?"),
    ("How do I run one test from the command line?", "How can I execute a single test from the terminal?"),
    ("What does the 0.95 threshold in the policy mean?", "What is the meaning of the 0.95 threshold of the policy?"),
    ("How do I add type hints to {func}?", "How can I annotate {func} with type hints?"),
    ("Why is {cls} a singleton?", "What is the reason {cls} has a single instance?"),
    ("How do I see the Redis keys of one masterplan?", "How can I list the Redis keys that belong to a masterplan?"),
]


def fill(template: str, rng: random.Random, **fixed: str) -> str:
    values = {
        "topic": rng.choice(TOPICS),
        "func": rng.choice(FUNCTIONS),
        "cls": rng.choice(CLASSES),
        "module": rng.choice(MODULES),
        "file": rng.choice(FILES),
        **fixed,
    }
    return template.format(**values)


def pair(a: str, b: str, same: bool, kind: str, variant: str = "") -> dict:
    row = {"a": a, "b": b, "same": same, "kind": kind}
    if variant:
        row["variant"] = variant
    return row


def negations(rng: random.Random) -> list[dict]:
    out = []
    for positive, negative in NEGATIONS:
        values = {"topic": rng.choice(TOPICS), "func": rng.choice(FUNCTIONS), "cls": rng.choice(CLASSES)}
        values["file"] = rng.choice(FILES)
        a, b = positive.format(**values), negative.format(**values)
        out.append(pair(*(a, b) if rng.random() < 0.5 else (b, a), False, "negation"))
    return out


NUMBER_WORDS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]


def numbers(rng: random.Random) -> list[dict]:
    out = []
    for template in NUMBERS:
        n = rng.choice([2, 3, 5, 7, 8, 10, 12, 16, 30, 50, 64, 100, 128, 404, 500, 1000, 4096])
        other = rng.choice([n + 1, n - 1 if n > 1 else n + 2, n * 10, n * 2])
        w, w2 = rng.sample(NUMBER_WORDS, 2)
        n2 = rng.choice([1, 2, 3, 4, 9])
        fixed = {"w": w, "n2": str(n2)}
        base = {"func": rng.choice(FUNCTIONS), "cls": rng.choice(CLASSES), "file": rng.choice(FILES)}
        a = template.format(n=n, **fixed, **base)
        b = template.format(n=other, **{**fixed, "w": w2}, **base)
        out.append(pair(a, b, False, "number"))
    return out


def versions(rng: random.Random) -> list[dict]:
    out = []
    for lib, v1, v2 in LIBS:
        for template in rng.sample(VERSIONS, 2):
            base = {"func": rng.choice(FUNCTIONS), "cls": rng.choice(CLASSES)}
            out.append(
                pair(template.format(lib=lib, v=v1, **base), template.format(lib=lib, v=v2, **base), False, "version")
            )
    return out


def antonyms(rng: random.Random) -> list[dict]:
    out = []
    for x, y, template in ANTONYMS:
        base = {"func": rng.choice(FUNCTIONS), "cls": rng.choice(CLASSES), "file": rng.choice(FILES)}
        a, b = template.format(x=x, **base), template.format(x=y, **base)
        a, b = a[0].upper() + a[1:], b[0].upper() + b[1:]
        out.append(pair(*(a, b) if rng.random() < 0.5 else (b, a), False, "antonym"))
    return out


def identifiers(rng: random.Random) -> list[dict]:
    out = []
    for variant, template, pool in IDENTIFIERS:
        x, y = rng.sample(pool, 2)
        out.append(pair(template.format(a=x), template.format(a=y), False, "identifier", variant))
    # A changed part inside an otherwise identical name.
    for x, y in [
        ("get_user_by_id", "get_user_by_name"),
        ("RAGQueryCache", "LLMPromptCache"),
        ("cache_app.rag.engine", "cache_app.llm.engine"),
        ("cache_app/rag/cache/index.py", "cache_app/rag/cache/codec.py"),
        ("MGECACHE['EMBEDDER']", "MGECACHE['KEY_PREFIX']"),
    ]:
        template = rng.choice(["Where is {a} used?", "Explain {a}", "What reads {a}?"])
        out.append(pair(template.format(a=x), template.format(a=y), False, "identifier", "partial"))
    return out


def changed_words(rng: random.Random) -> list[dict]:
    out = []
    for template in CHANGED_WORDS:
        slot = re.search(r"\{([^{}|]+)\|([^{}]+)\}", template)
        assert slot is not None
        values = {"func": rng.choice(FUNCTIONS), "cls": rng.choice(CLASSES), "file": rng.choice(FILES)}
        a = (template[: slot.start()] + slot.group(1) + template[slot.end() :]).format(**values)
        b = (template[: slot.start()] + slot.group(2) + template[slot.end() :]).format(**values)
        out.append(pair(a, b, False, "changed_word"))
    return out


def unrelated(rng: random.Random, count: int) -> list[dict]:
    questions = [q for q in QUESTIONS]
    out = []
    for _ in range(count):
        a, b = rng.sample(questions, 2)
        out.append(pair(fill(a, rng), fill(b, rng), False, "unrelated"))
    return out


# --- near-duplicates -----------------------------------------------------------------------


def _plain_word_positions(words: list[str], lengths: range) -> list[int]:
    """Words a typo may hit: ordinary lower-case words (not identifiers or numbers) of these lengths."""
    return [i for i, w in enumerate(words) if w.isalpha() and w.islower() and len(w) in lengths]


def typo(text: str, rng: random.Random, lengths: range = range(7, 40)) -> str:
    """One letter dropped or doubled, or two neighbours swapped, inside one ordinary word."""
    words = text.split(" ")
    i = rng.choice(_plain_word_positions(words, lengths))
    original = w = words[i]
    while w == original:  # swapping two equal letters changes nothing: draw again
        j = rng.randrange(1, len(original) - 2)
        kind = rng.choice(["swap", "drop", "double"])
        if kind == "swap":
            w = original[:j] + original[j + 1] + original[j] + original[j + 2 :]
        elif kind == "drop":
            w = original[:j] + original[j + 1 :]
        else:
            w = original[:j] + original[j] + original[j:]
    words[i] = w
    return " ".join(words)


def typo_short_word(text: str, rng: random.Random) -> str:
    return typo(text, rng, range(5, 7))


def casing(text: str, rng: random.Random) -> str:
    return text.lower() if rng.random() < 0.6 else text.upper()


def punctuation(text: str, rng: random.Random) -> str:
    stripped = text.rstrip("?.!")
    return rng.choice([stripped, stripped + "??", stripped + ".", stripped.replace(",", "") + "?!", stripped + " ?"])


def _cuts(words: list[str]) -> list[int]:
    return [i for i, w in enumerate(words) if w in PREPOSITIONS and i > 2 and len(words) - i <= 5]


def word_order(text: str, rng: random.Random) -> str:
    """Move the trailing phrase (from its last preposition on, at most 5 words) to the front."""
    words = text.rstrip("?.!").split(" ")
    i = _cuts(words)[-1]
    moved = " ".join(words[i:])
    rest = " ".join(words[:i])
    return f"{moved[0].upper()}{moved[1:]}, {rest[0].lower()}{rest[1:]}?"


def filler(text: str, rng: random.Random, choices: tuple[list[str], list[str]] = FILLER_WORDS) -> str:
    before, after = choices
    if rng.random() < 0.5:
        return rng.choice(before) + text[0].lower() + text[1:]
    body = text.rstrip("?.!")
    end = text[len(body) :]
    return body + rng.choice(after) + end


def filler_phrase(text: str, rng: random.Random) -> str:
    return filler(text, rng, FILLER_PHRASES)


PREPOSITIONS = ("in", "for", "on", "with", "from", "under")
VARIANTS = {"typo": typo, "casing": casing, "punctuation": punctuation, "word_order": word_order, "filler": filler}
# Edits after which neither embedder reliably scores 0.9: reported as their own kind.
HARD_VARIANTS = {"typo_short_word": typo_short_word, "filler_phrase": filler_phrase}


def near_duplicates(
    rng: random.Random, per_variant: int, variants: dict = VARIANTS, kind: str = "near_duplicate"
) -> list[dict]:
    out = []
    for variant, edit in variants.items():
        made = 0
        for template in rng.sample(QUESTIONS * 2, 2 * len(QUESTIONS)):
            text = fill(template, rng)
            if variant == "word_order" and not _cuts(text.rstrip("?.!").split(" ")):
                text = text.rstrip("?.!") + " in this repository?"
            try:
                edited = edit(text, rng)
            except IndexError:  # no word this edit applies to
                continue
            out.append(pair(text, edited, True, kind, variant))
            made += 1
            if made == per_variant:
                break
    return out


def paraphrases(rng: random.Random) -> list[dict]:
    out = []
    for a, b in PARAPHRASES:
        values = {"func": rng.choice(FUNCTIONS), "cls": rng.choice(CLASSES)}
        out.append(pair(a.format(**values), b.format(**values), True, "paraphrase"))
    return out


def build(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    rows = [
        *negations(rng),
        *numbers(rng),
        *versions(rng),
        *antonyms(rng),
        *identifiers(rng),
        *changed_words(rng),
        *unrelated(rng, 15),
        *near_duplicates(rng, 20),
        *near_duplicates(rng, 10, HARD_VARIANTS, "near_duplicate_hard"),
        *paraphrases(rng),
    ]
    return rows


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed file differs from a fresh build")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    text = render(build())
    if args.check:
        if args.out.read_text(encoding="utf-8") != text:
            print(f"{args.out} is out of date: run benchmarks/similarity_pairs.py", file=sys.stderr)
            return 1
        return 0
    args.out.write_text(text, encoding="utf-8")
    rows = build()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["kind"]] = counts.get(row["kind"], 0) + 1
    print(f"wrote {len(rows)} pairs to {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
