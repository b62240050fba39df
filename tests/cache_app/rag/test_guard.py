"""The hit guard's rules, on wording that is not in benchmarks/similarity_pairs.jsonl (held out).

The labelled set is where the rules were developed; these pairs check that the rules, not
its words, do the work. Each case names the rule that must reject it.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import REGISTRY

from cache_app.core.policies import LayerPolicy
from cache_app.rag import guard
from cache_app.rag.guard import (
    HitScreen,
    RuleGuard,
    candidate_batches,
    disagreement,
    extract,
    lexical_near_duplicate,
    load_guard,
    screen_for,
)


def rejections(reason: str) -> float:
    return REGISTRY.get_sample_value("mgecache_rag_similarity_rejections_total", {"reason": reason}) or 0.0


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        # negation, in its different spellings
        ("Should the importer skip hidden rows?", "Should the importer not skip hidden rows?", "negation"),
        ("Why does the webhook fire twice?", "Why doesn\u2019t the webhook fire twice?", "negation"),
        ("Why does the webhook fire twice?", "why doesnt the webhook fire twice", "negation"),
        ("Can the scheduler run on weekends?", "The scheduler cannot run on weekends?", "negation"),
        ("Is the cron job ever retried?", "Is the cron job never retried?", "negation"),
        ("Deploy the service with a sidecar", "Deploy the service without a sidecar", "negation"),
        ("Which fields are indexed?", "Which fields are non-indexed?", "negation"),
        # numbers: digits, number words, dotted numbers, thousands
        ("Page through results 25 at a time", "Page through results 50 at a time", "number"),
        ("Keep three replicas of each shard", "Keep four replicas of each shard", "number"),
        ("What broke between release 3.4 and the hotfix?", "What broke between release 3.5 and the hotfix?", "number"),
        ("Is 4.3 newer than 3.4?", "Is 3.4 newer than 4.3?", "number"),
        ("Cap the upload at 20,000 rows", "Cap the upload at 2000 rows", "number"),
        ("Why is the order total off by 0.01?", "Why is the order total off by 0.1?", "number"),
        # identifiers of every shape
        ("What does normalize_whitespace strip?", "What does normalize_newlines strip?", "identifier"),
        ("Why is InvoiceRenderer so slow?", "Why is InvoiceParser so slow?", "identifier"),
        ("Where is billing.tasks.charge scheduled?", "Where is billing.tasks.refund scheduled?", "identifier"),
        ("What sets the timeout in deploy/nginx.conf?", "What sets the timeout in deploy/haproxy.conf?", "identifier"),
        ("Grep the logs for 'payment declined'", "Grep the logs for 'payment accepted'", "identifier"),
        ("What does git log --oneline print?", "What does git log --graph print?", "identifier"),
        ("Why does HSET fail on this key?", "Why does HINCRBY fail on this key?", "identifier"),
        ("When should I call flush()?", "When should I call close()?", "identifier"),
        ("Does it work with utf8?", "Does it work with utf16?", "identifier"),
        # opposites: listed pairs in new sentences, negating prefixes, alternatives
        ("List the invoices oldest first", "List the invoices newest first", "antonym"),
        ("Which job runs prior to the nightly backup?", "Which job runs following the nightly backup?", "antonym"),
        ("Append a header row to the export", "Drop the header row from the export", "antonym"),
        ("Turn on verbose logging for the importer", "Turn off verbose logging for the importer", "antonym"),
        ("How do I mount the volume at boot?", "How do I unmount the volume at boot?", "antonym"),
        ("Why is the checksum invalid after resizing?", "Why is the checksum valid after resizing?", "antonym"),
        ("Why is the mapping case-sensitive?", "Why is the mapping case-insensitive?", "antonym"),
        ("Is the queue consumer blocking?", "Is the queue consumer nonblocking?", "antonym"),
        ("Move the rows from staging to production", "Move the rows to staging from production", "antonym"),
        ("Copy 3 files to 5 folders", "Copy 5 files to 3 folders", "number"),
        ("Rename old_name.py to new_name.py", "Rename new_name.py to old_name.py", "identifier"),
        ("Retry every 10 minutes", "Retry every 10 hours", "antonym"),
        ("Export the report as XML", "Export the report as CSV", "antonym"),
        ("Should retries be longer than the timeout?", "Should retries be shorter than the timeout?", "antonym"),
    ],
)
def test_held_out_pairs_that_differ_in_meaning_are_rejected_by_the_right_rule(a, b, reason):
    assert disagreement(a, b) == reason
    assert disagreement(b, a) == reason  # the rules are symmetric


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Why is InvoiceRenderer so slow?", "why is invoicerenderer so slow"),  # casing, punctuation
        ("What sets the timeout in deploy/nginx.conf?", "In deploy/nginx.conf, what sets the timeout?"),  # order
        ("Keep 3 replicas of each shard", "keep three replicas of each shard"),  # digits vs words
        ("Cap the upload at 20,000 rows", "cap the upload at 20000 rows"),
        ("What does API v3 return for a 404?", "What does API version 3 return for a 404?"),
        ("Why doesn't the cron job retry?", "Why does the cron job not retry?"),  # contraction vs words
        ("Deploy without a sidecar", "Deploy with no sidecar"),  # two spellings of one negation
        ("Grep the logs for 'payment declined'", "grep the logs for payment declined"),  # quotes dropped
        ("How can I iterate over all invoices?", "What's the way to loop through every invoice?"),  # paraphrase
        ("How do I sort invoices by date?", "How do I sort invoices by date in ascending order?"),  # one side only
        ("Which job runs after the backup and before the report?", "Which job runs after backup, before the report?"),
        # a phrase moved whole keeps each number, identifier and direction with its word
        ("In wave 3, what does atom 5 do?", "What does atom 5 do in wave 3?"),
        ("In settings.py, what does get_user return?", "What does get_user return in settings.py?"),
        ("From staging, copy the rows to production", "Copy the rows to production from staging"),
    ],
)
def test_held_out_pairs_that_mean_the_same_pass(a, b):
    assert disagreement(a, b) is None
    assert disagreement(b, a) is None


@pytest.mark.parametrize(
    ("a", "b", "near"),
    [
        ("Why is the importer slow?", "hi, why is the importer slow??", True),  # filler, punctuation
        ("Why is the importer slow?", "Why is the imporetr slow?", True),  # swapped neighbours
        ("Why is the importer slow?", "Why is the imorter slow?", True),  # dropped letter
        ("Why is the importer slow?", "Why is the importter slow?", True),  # doubled letter
        ("Why is the importer slow?", "Why is the exporter slow?", False),  # another word
        ("How many lines does the report have?", "How many links does the report have?", False),  # substitution
        ("Where is the route defined?", "Where is the router defined?", False),  # inflection, not a typo
        ("Where is the importer?", "Where is the importer used?", False),  # a word added
        ("Copy the file to the server", "Copy the file from the server", False),  # another word
    ],
)
def test_lexical_near_duplicates(a, b, near):
    assert lexical_near_duplicate(extract(a), extract(b)) is near
    assert lexical_near_duplicate(extract(b), extract(a)) is near


def test_overlong_queries_are_never_compared():
    long = "x " * (guard.MAX_CHARS // 2 + 1)
    assert disagreement(long, long) == "too_long"
    assert not lexical_near_duplicate(extract(long), extract(long))


# --- the per-lookup screen -----------------------------------------------------------------------


class Candidate:
    def __init__(self, score: float) -> None:
        self.score = score


def test_screen_rejects_counts_by_reason_and_lets_the_next_candidate_through():
    screen = HitScreen("Keep three replicas of each shard", threshold=0.95, guard=RuleGuard())
    before = rejections("number")
    assert screen.admit("Keep four replicas of each shard", 0.99) is False
    assert rejections("number") - before == 1
    assert screen.admit("keep three replicas of each shard!", 0.96) is True


def test_below_the_threshold_only_a_lexical_near_duplicate_is_served_and_nothing_is_counted():
    screen = HitScreen("Why is the importer slow?", threshold=0.95, guard=RuleGuard())
    assert screen.search_threshold == guard.NEAR_DUPLICATE_FLOOR
    before = {reason: rejections(reason) for reason in guard.REASONS}
    assert screen.admit("Why is the exporter slow?", 0.93) is False  # another question
    assert screen.admit("Why is the importer not slow?", 0.93) is False  # would not have been served anyway
    assert {reason: rejections(reason) for reason in guard.REASONS} == before
    assert screen.admit("Why is the imporetr slow?", 0.91) is True


def test_without_a_guard_the_threshold_alone_decides():
    screen = screen_for("Keep three replicas", LayerPolicy(layer="rag", similarity_guard=False))
    assert screen.search_threshold == 0.95
    assert screen.admit("Keep four replicas", 0.96) is True


class Recorder:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def record(self, **fields) -> None:
        self.records.append(fields)


def test_shadow_mode_records_the_first_servable_candidate_then_settles_as_a_miss():
    sink = Recorder()
    screen = HitScreen(
        "Keep three replicas", threshold=0.95, guard=RuleGuard(), shadow=sink, embedding_model="m", scope=None
    )
    before = REGISTRY.get_sample_value("mgecache_rag_similarity_shadow_hits_total") or 0.0
    assert screen.admit("Keep four replicas", 0.99) is False  # rejected by the guard: not recorded
    assert screen.admit("keep three replicas!", 0.97) is False  # would be served: recorded, withheld
    assert screen.settled
    assert screen.admit("Keep three replicas.", 0.96) is False  # settled: nothing more
    assert sink.records == [
        {
            "query": "Keep three replicas",
            "cached_query": "keep three replicas!",
            "similarity": 0.97,
            "embedding_model": "m",
            "scope": None,
        }
    ]
    assert (REGISTRY.get_sample_value("mgecache_rag_similarity_shadow_hits_total") or 0.0) - before == 1


def test_candidate_batches_cap_the_candidates_below_the_threshold_and_stop_once_settled():
    screen = HitScreen("q", threshold=0.95, guard=RuleGuard())
    candidates = [Candidate(s) for s in (0.99, 0.98, 0.97, 0.96, 0.955, 0.94, 0.93, 0.92, 0.91, 0.905, 0.9)]
    batches = list(candidate_batches(candidates, screen, 4, 3))
    assert [len(b) for b in batches] == [4, 4, 1]  # 5 above the threshold + one batch (4) below it
    screen.settled = True
    assert list(candidate_batches(candidates, screen, 4, 3)) == []


class Broken:
    def prepare(self, query):
        raise RuntimeError("boom")

    def check(self, prepared, candidate_query):
        return None


def test_a_guard_that_raises_rejects_and_counts_an_error():
    screen = HitScreen("q", threshold=0.95, guard=Broken())
    before = rejections("error")
    assert screen.admit("q!", 0.99) is False
    assert rejections("error") - before == 1


class Unbounded:
    def prepare(self, query):
        return query

    def check(self, prepared, candidate_query):
        return f"reason-{candidate_query}"  # a plugged guard's own reasons: labels must stay bounded


def test_unknown_reasons_are_counted_as_other():
    screen = HitScreen("q", threshold=0.95, guard=Unbounded())
    before = rejections("other")
    assert screen.admit("anything", 0.99) is False
    assert rejections("other") - before == 1
    assert REGISTRY.get_sample_value("mgecache_rag_similarity_rejections_total", {"reason": "reason-anything"}) is None


# --- configuration -------------------------------------------------------------------------------


def test_load_guard_uses_the_setting_and_rejects_what_is_not_a_guard(settings):
    assert isinstance(load_guard(), RuleGuard)
    with pytest.raises(ImproperlyConfigured, match="cannot be imported"):
        load_guard("cache_app.rag.guard.NoSuchGuard")
    with pytest.raises(ImproperlyConfigured, match="has no prepare"):
        load_guard("collections.OrderedDict")
    settings.MGECACHE = {**settings.MGECACHE, "RAG_HIT_GUARD": "cache_app.rag.guard.NoGuard"}
    assert screen_for("a", LayerPolicy(layer="rag")).guard is load_guard("cache_app.rag.guard.NoGuard")


@pytest.mark.parametrize(
    ("overrides", "error_id"),
    [
        ({"RAG_HIT_GUARD": "cache_app.rag.guard.Missing"}, "cache_app.E070"),
        ({"RAG_HIT_GUARD": "collections.OrderedDict"}, "cache_app.E070"),
        ({"RAG_HIT_GUARD": ""}, "cache_app.E070"),
        ({"RAG_SHADOW_BUFFER": 0}, "cache_app.E071"),
        ({"RAG_SHADOW_MAX_RECORDS": True}, "cache_app.E071"),
        ({"RAG_SHADOW_FLUSH_SECONDS": 0}, "cache_app.E072"),
    ],
)
def test_guard_settings_are_validated(settings, overrides, error_id):
    from cache_app.checks import check_rag_guard_settings

    assert check_rag_guard_settings() == []
    settings.MGECACHE = {**settings.MGECACHE, **overrides}
    assert [e.id for e in check_rag_guard_settings()] == [error_id]
