"""RAGQueryCache across processes, restarts, log segments, index bounds and Redis outages.

Cross-process tests start real child interpreters on the real Redis; outage tests run a
private redis-server (or a silent socket) and never assert wall-clock timings. The
no-SCAN proof counts commands on a private server with INFO commandstats.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from functools import partial

import numpy as np
import pytest
import redis as redis_lib
from prometheus_client import REGISTRY

from cache_app.core import keys
from cache_app.core.redis_client import CircuitBreaker, RedisGuard
from cache_app.rag.cache import RAGIndex, RAGQueryCache
from cache_app.rag.cache.index import Horizon, NamespaceIndex, Position
from tests.conftest import StaticPolicies as _StaticPolicies
from tests.conftest import run_python

# Query texts here are labels, not questions: the hit guard has its own tests (test_guard*.py).
StaticPolicies = partial(_StaticPolicies, similarity_guard=False)

MODEL = "hashed-ngram-384-v1"


def errors(operation: str) -> float:
    return REGISTRY.get_sample_value("mgecache_cache_errors_total", {"cache_layer": "rag", "operation": operation}) or 0


def vectors(n: int, dim: int, seed: int) -> np.ndarray:
    m = np.random.default_rng(seed).standard_normal((n, dim))
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def nudge(v: np.ndarray, seed: int, cosine: float = 0.99) -> np.ndarray:
    other = np.random.default_rng(seed).standard_normal(v.shape[0])
    other -= other.dot(v) * v
    other /= np.linalg.norm(other)
    return cosine * v + np.sqrt(1 - cosine**2) * other


def rows(cache: RAGQueryCache) -> int:
    return sum(ns.n - ns.dead for ns in cache.index._namespaces.values())


# --- two real processes ---------------------------------------------------------------------

CHILD = """
import json, numpy as np
from cache_app.rag.cache import RAGQueryCache
cache = RAGQueryCache()
m = np.random.default_rng({seed}).standard_normal(({n}, 384))
for i, v in enumerate(m):
    cache.set(f"child query {{i}}", v, [{{"i": i}}], embedding_model="{model}", top_k=4, masterplan_id="{mp}")
probe = np.asarray({probe})
hit = cache.get("probe", probe, embedding_model="{model}", top_k=4, masterplan_id="{mp}")
print(json.dumps(None if hit is None else [hit.query, hit.match]))
"""


@pytest.mark.redis_server
@pytest.mark.django_db(transaction=True)
def test_an_entry_written_by_another_process_is_found_by_similarity_on_the_next_lookup(redis, subprocess_env):
    cache = RAGQueryCache(policies=StaticPolicies(), index=RAGIndex())
    mp = str(uuid.uuid4())
    mine = vectors(1, 384, 7)[0]
    cache.set("parent query", mine, [{"from": "parent"}], embedding_model=MODEL, top_k=4, masterplan_id=mp)
    theirs = vectors(30, 384, 99)
    # This process already mirrors the namespace (it has searched it) before the child writes.
    assert cache.get("p", nudge(theirs[29], 1), embedding_model=MODEL, top_k=4, masterplan_id=mp) is None

    probe = nudge(mine, 2).tolist()
    out = run_python(CHILD.format(seed=99, n=30, model=MODEL, mp=mp, probe=probe), subprocess_env)
    # The child (a fresh process) rebuilt its index from Redis and found the parent's entry.
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["parent query", "similar"]
    # The parent sees all 30 of the child's entries on its very next lookups (no polling, no delay).
    for i in (0, 17, 29):
        hit = cache.get("p", nudge(theirs[i], 3), embedding_model=MODEL, top_k=4, masterplan_id=mp)
        assert hit is not None
        assert hit.query == f"child query {i}"
        assert hit.documents == [{"i": i}]
    assert rows(cache) == 31


# --- restarts and the segmented log (runs on any Redis) -------------------------------------


@pytest.fixture
def small_segments(settings):
    # 64-dim records are 312 bytes: about 13 records per segment, so 200 entries span 16 segments.
    settings.MGECACHE = {**settings.MGECACHE, "RAG_LOG_SEGMENT_BYTES": 4096}


def test_a_restarted_process_rebuilds_its_index_from_redis(redis, small_segments):
    writer = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    m = vectors(200, 64, 5)
    for i, v in enumerate(m):
        writer.set(f"q{i}", v, [{"i": i}], embedding_model="m64", top_k=3)
    restarted = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())  # nothing in memory
    for i in (0, 1, 100, 199):
        hit = restarted.get(f"near {i}", nudge(m[i], i), embedding_model="m64", top_k=3)
        assert hit.query == f"q{i}"
        assert hit.documents == [{"i": i}]
    assert rows(restarted) == 200


def test_an_incremental_reader_follows_the_log_across_segments_without_loss_or_duplicates(redis, small_segments):
    writer = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    reader = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    m = vectors(120, 64, 6)
    for step in range(0, 120, 7):  # the reader looks up between bursts that cross segment boundaries
        for i in range(step, min(step + 7, 120)):
            writer.set(f"q{i}", m[i], [{"i": i}], embedding_model="m64", top_k=3)
        last = min(step + 7, 120) - 1
        assert reader.get("probe", nudge(m[last], last), embedding_model="m64", top_k=3).query == f"q{last}"
    assert rows(reader) == 120
    assert reader.get("probe", nudge(m[3], 3), embedding_model="m64", top_k=3).query == "q3"


def test_memory_is_bounded_per_namespace_and_the_newest_entries_are_kept(redis, small_segments, settings):
    settings.MGECACHE = {**settings.MGECACHE, "RAG_INDEX_MAX_ENTRIES": 60, "RAG_INDEX_MAX_TOTAL_ENTRIES": 60}
    writer = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    m = vectors(300, 64, 8)
    for i, v in enumerate(m):
        writer.set(f"q{i}", v, [], embedding_model="m64", top_k=3)
        if i % 50 == 0:
            writer.get("probe", v, embedding_model="m64", top_k=3)
    for cache in (writer, RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())):
        assert cache.get("probe", nudge(m[299], 1), embedding_model="m64", top_k=3).query == "q299"
        ns = next(iter(cache.index._namespaces.values()))
        assert ns.n <= 60 + 64  # max_entries + slack before a compaction
        assert ns.cap <= 60 + 64
    # The Redis log keeps about the same window: old segments are deleted as new ones start.
    log_keys = list(redis.scan_iter(match=keys.rag_log_base(None, keys.rag_namespace_id("m64", 3), 64) + "*"))
    assert len(log_keys) <= writer.index.retention_segments(64) + 2


def test_the_process_budget_drops_the_least_recently_used_namespace():
    index = RAGIndex(max_entries=100, max_total_entries=150)
    a = index.namespace("a", 8)
    b = index.namespace("b", 8)
    records = np.zeros(100, dtype=a.dtype)
    records["vec"] = vectors(100, 8, 1)
    records["expires"] = time.time() + 60
    for ns in (a, b):
        ns.load_segments(ns.version, [], time.time())
        ns.segment, ns.offset = 0, 0
        assert ns._apply_segment(0, 0, records.tobytes(), time.time())
    index.namespace("b", 8)  # b is now the most recently used
    index.enforce_budget()
    assert len(index) == 100
    assert index.namespace("b", 8) is b
    assert index.namespace("a", 8) is not a  # a was dropped and starts again from Redis


def test_search_prunes_with_an_exact_bound_and_never_misses_the_best_row():
    ns = NamespaceIndex(384, max_entries=5000, retention_segments=4)
    m = vectors(3000, 384, 11)
    records = np.zeros(3000, dtype=ns.dtype)
    records["vec"] = m
    records["expires"] = time.time() + 60
    ns.segment = 0
    ns._apply_segment(0, 0, records.tobytes(), time.time())
    rng = np.random.default_rng(0)
    for _ in range(20):
        target = int(rng.integers(3000))
        q = nudge(m[target], target, cosine=float(rng.uniform(0.9, 0.999))).astype(np.float32)
        exact = m @ q
        found = ns.search(q, 0.85, now=time.time(), tag=(0, 0))
        assert found.candidates[0].row == int(np.argmax(exact))
        assert found.candidates[0].score == pytest.approx(float(exact.max()), abs=1e-5)


# --- no SCAN or KEYS on a lookup ---------------------------------------------------------------


def command_calls(client: redis_lib.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()}


def test_no_lookup_issues_scan_or_keys(private_redis):
    client = redis_lib.Redis.from_url(private_redis.url)
    cache = RAGQueryCache(client, policies=StaticPolicies(), index=RAGIndex())
    m = vectors(50, 384, 3)
    for i, v in enumerate(m):
        cache.set(f"q{i}", v, [{"i": i}], embedding_model=MODEL, top_k=5)
    client.config_resetstat()
    assert cache.get("q1", m[1], embedding_model=MODEL, top_k=5).match == "exact"
    assert cache.get("near", nudge(m[2], 2), embedding_model=MODEL, top_k=5).match == "similar"
    assert cache.get("far", vectors(1, 384, 77)[0], embedding_model=MODEL, top_k=5) is None
    fresh = RAGQueryCache(client, policies=StaticPolicies(), index=RAGIndex())  # a rebuild, too
    assert fresh.get("near", nudge(m[3], 3), embedding_model=MODEL, top_k=5).query == "q3"
    calls = command_calls(client)
    assert calls.get("mget", 0) >= 4  # the counting works: lookups did reach this server
    assert "scan" not in calls
    assert "keys" not in calls
    # A lookup is one round trip when it hits exactly, two when the similar entry is confirmed.
    client.config_resetstat()
    cache.get("q1", m[1], embedding_model=MODEL, top_k=5)
    assert sum(command_calls(client).values()) <= 5  # MGET, HGET, 2 x GETRANGE (+ INFO itself)


# --- outages ------------------------------------------------------------------------------------


def short_timeout_client(port: int) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.25, socket_connect_timeout=0.25)


def cache_on(client, clock) -> tuple[RAGQueryCache, CircuitBreaker]:
    breaker = CircuitBreaker(probe=client.ping, failure_threshold=1, reset_seconds=1.0, clock=clock, name="test-rag")
    guard = RedisGuard(breaker, layer="rag", clock=clock)
    return RAGQueryCache(client, policies=StaticPolicies(), guard=guard, index=RAGIndex()), breaker


def test_a_stopped_redis_fails_open_and_caching_resumes_when_it_returns(private_redis, clock):
    client = short_timeout_client(private_redis.port)
    cache, breaker = cache_on(client, clock)
    v = vectors(1, 384, 4)[0]
    cache.set("q", v, [{"a": 1}], embedding_model=MODEL, top_k=5)
    assert cache.get("near", nudge(v, 1), embedding_model=MODEL, top_k=5).match == "similar"

    private_redis.stop()
    get_errors, set_errors = errors("get"), errors("set")
    assert cache.get("q", v, embedding_model=MODEL, top_k=5) is None
    assert breaker.is_open
    assert cache.get("near", nudge(v, 1), embedding_model=MODEL, top_k=5) is None  # index alone never answers
    cache.set("q2", v, [{"a": 2}], embedding_model=MODEL, top_k=5)  # does not raise
    assert errors("get") == get_errors + 2
    assert errors("set") == set_errors + 1
    with pytest.raises(ValueError, match="zero vector"):  # bad input is still reported while Redis is down
        cache.get("q", [0.0] * 384, embedding_model=MODEL, top_k=5)

    private_redis.start()  # an empty server: everything was lost; no call is needed from here on
    assert breaker.wait_closed(timeout=10)  # the background probe found Redis again
    assert not breaker.is_open
    assert cache.get("near", nudge(v, 1), embedding_model=MODEL, top_k=5) is None  # the old index rows are gone
    cache.set("q", v, [{"a": 3}], embedding_model=MODEL, top_k=5)
    assert cache.get("near", nudge(v, 1), embedding_model=MODEL, top_k=5).documents == [{"a": 3}]


def test_a_blackholed_redis_fails_open(blackhole_port, clock):
    client = short_timeout_client(blackhole_port)
    cache, breaker = cache_on(client, clock)
    v = vectors(1, 384, 4)[0]
    before = errors("get")
    assert cache.get("q", v, embedding_model=MODEL, top_k=5) is None  # one socket timeout
    assert breaker.wait_verified(5)  # then the breaker's ping times out too: open
    assert breaker.is_open
    for _ in range(20):
        assert cache.get("q", v, embedding_model=MODEL, top_k=5) is None
        cache.set("q", v, [], embedding_model=MODEL, top_k=5)
    assert errors("get") == before + 21


def test_search_is_exact_when_most_rows_are_near_duplicates_of_the_query():
    # Every row survives the bound: the second pass takes the dense path and still ranks exactly.
    ns = NamespaceIndex(384, max_entries=5000, retention_segments=4)
    base = vectors(1, 384, 12)[0]
    m = np.stack([nudge(base, seed, cosine=0.9 + 0.099 * (seed % 97) / 97) for seed in range(2000)])
    records = np.zeros(len(m), dtype=ns.dtype)
    records["vec"] = m
    records["expires"] = time.time() + 60
    ns.segment = 0
    ns._apply_segment(0, 0, records.tobytes(), time.time())
    q = base.astype(np.float32)
    exact = m @ q
    found = ns.search(q, 0.95, now=time.time(), tag=(0, 0))
    assert len(found.candidates) == int((exact >= 0.95).sum())
    best = found.candidates[0]
    assert best.score == pytest.approx(float(exact.max()), abs=1e-5)
    # Ties (equal cosines from identical seeds mod 97) go to the newest row.
    assert best.row == int(np.flatnonzero(exact >= exact.max() - 1e-6).max())


def test_invalidation_unlinks_the_log_segments_that_only_hold_dead_records(redis, small_segments):
    cache = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    mp, other = uuid.uuid4(), uuid.uuid4()
    m = vectors(200, 64, 9)
    for i, v in enumerate(m):
        cache.set(f"q{i}", v, [], embedding_model="m64", top_k=3, masterplan_id=mp)
    cache.set("kept", m[0], [], embedding_model="m64", top_k=3, masterplan_id=other)

    def log_keys(masterplan_id) -> list[bytes]:
        base = keys.rag_log_base(masterplan_id, keys.rag_namespace_id("m64", 3), 64)
        return list(redis.scan_iter(match=base + "*"))

    assert len(log_keys(mp)) >= 16
    assert cache.invalidate_masterplan(mp) == 200
    assert len(log_keys(mp)) <= 4  # head, first and the last two segments
    assert len(log_keys(other)) == 3  # head, first and one segment, untouched
    fresh = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    assert fresh.get("p", nudge(m[199], 1), embedding_model="m64", top_k=3, masterplan_id=mp) is None
    assert fresh.get("p", nudge(m[0], 1), embedding_model="m64", top_k=3, masterplan_id=other).query == "kept"
    cache.invalidate_all()
    assert fresh.get("p", nudge(m[0], 1), embedding_model="m64", top_k=3, masterplan_id=other) is None


def test_concurrent_writers_and_readers_lose_nothing_and_duplicate_nothing(redis, small_segments):
    # 8 threads write and immediately look up their own entries while segments roll over
    # every ~13 records: a record appended to a segment readers already left would be lost,
    # and two callers catching up at once must not double rows.
    cache = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    m = vectors(240, 64, 21)
    wrong: list[int] = []

    def work(thread: int) -> None:
        for i in range(thread, len(m), 8):
            cache.set(f"q{i}", m[i], [{"i": i}], embedding_model="m64", top_k=3)
            hit = cache.get(f"p{i}", nudge(m[i], i), embedding_model="m64", top_k=3)
            if hit is None or hit.query != f"q{i}":
                wrong.append(i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert rows(cache) == 240


def log_records(ns: NamespaceIndex, first: int, count: int) -> bytes:
    """``count`` records with distinct one-hot vectors (row i has its 1 at dimension first + i)."""
    records = np.zeros(count, dtype=ns.dtype)
    records["vec"] = np.eye(ns.dim)[first : first + count]
    records["expires"] = time.time() + 60
    return records.tobytes()


def loaded_namespace(segment: int) -> NamespaceIndex:
    """A mirror positioned at the start of ``segment`` of the log whose first segment is 1."""
    ns = NamespaceIndex(16, max_entries=1000, retention_segments=20)
    assert ns.advance(ns.position(), Horizon(segment - 1, 1), [], time.time())[1] != []
    ns.segment, ns.offset, ns.sealed = segment - 1, 0, True
    return ns


def test_a_catch_up_never_moves_past_a_segment_another_caller_read_halfway():
    # Log: segment 10 = r0 r1 r2 (full), segment 11 = r3. Caller C read segment 10 while it
    # held only r0; lookup L (positioned two segments back, so its own tail reads are of no
    # use) then sees head 11. L must fetch the rest of 10, not jump from r0 to 11.
    ns = loaded_namespace(10)
    now = time.time()
    seg10, seg11 = log_records(ns, 0, 3), log_records(ns, 3, 1)
    behind = Position(ns.version, 8, 0)
    c = Position(ns.version, 9, 0)
    assert ns.advance(c, Horizon(10, 1), [b"", seg10[: ns.dtype.itemsize]], now)[1] == []
    version, reads = ns.advance(behind, Horizon(11, 1), [b"", b""], now)
    assert reads == [(10, ns.dtype.itemsize), (11, 0)]
    horizon = Horizon(11, 1)
    assert ns.load_segments(
        version, [(10, ns.dtype.itemsize, seg10[ns.dtype.itemsize :]), (11, 0, seg11)], now, horizon
    )
    assert ns.plan(horizon)[1] == []
    assert (ns.n, ns.segment) == (4, 11)
    assert sorted(np.argmax(ns.head[: ns.n], axis=1).tolist()) == [0, 1, 2, 3]


def test_a_lookup_whose_head_segment_was_reached_by_another_caller_reads_the_rest_of_it():
    # The mirror is at segment 12 (another caller read 2 records of it); L saw head 12 but
    # its tail reads were of segments 10 and 11: it cannot know whether its own record is
    # among the 2, so it reads segment 12 from where the mirror is.
    ns = loaded_namespace(12)
    now = time.time()
    size = ns.dtype.itemsize
    assert ns.advance(Position(ns.version, 11, 0), Horizon(12, 1), [b"", log_records(ns, 0, 2)], now)[1] == []
    horizon = Horizon(12, 1)
    version, reads = ns.advance(Position(ns.version, 10, 0), horizon, [b"", b""], now)
    assert reads == [(12, 2 * size)]
    assert ns.load_segments(version, [(12, 2 * size, log_records(ns, 2, 1))], now, horizon)
    assert ns.plan(horizon)[1] == []
    assert ns.n == 3
    # A lookup that read the segment itself is owed only what it read.
    assert ns.advance(Position(ns.version, 12, 0), Horizon(12, 1), [log_records(ns, 0, 3), b""], now)[1] == []
    assert ns.n == 3


def test_a_head_read_before_another_caller_moved_on_is_not_a_restarted_log():
    ns = loaded_namespace(20)
    now = time.time()
    c = Position(ns.version, 19, 0)
    assert ns.advance(c, Horizon(21, 1), [b"", log_records(ns, 0, 2)], now)[1] == [(21, 0)]
    version = ns.version
    # L's head (20) is older than the mirror's segment (21): same log (same first segment).
    assert ns.advance(Position(version, 19, 0), Horizon(20, 1), [b"", log_records(ns, 0, 2)], now) == (version, [])
    assert (ns.n, ns.version) == (2, version)
    # A different first segment is another log (the old one expired): rebuild.
    assert ns.advance(ns.position(), Horizon(5000, 4990), [b"", b""], now)[1] == [(n, 0) for n in range(4990, 5001)]
    assert ns.version == version + 1
    assert ns.n == 0


def test_overlapping_catch_ups_apply_each_record_once():
    ns = loaded_namespace(3)
    now = time.time()
    seg3, seg4 = log_records(ns, 0, 5), log_records(ns, 5, 4)
    size = ns.dtype.itemsize
    at = ns.position()  # both callers start at the same position; B read the log later than A
    assert ns.advance(at, Horizon(3, 1), [b"", seg3[: 2 * size]], now)[1] == []
    version, reads = ns.advance(at, Horizon(4, 1), [b"", seg3], now)
    assert (ns.n, reads) == (5, [(4, 0)])
    horizon = Horizon(4, 1)
    assert ns.load_segments(version, [(4, 0, seg4[:size])], now, horizon)  # two fetches of segment 4
    assert ns.load_segments(version, [(4, 0, seg4)], now, horizon)
    assert ns.plan(horizon)[1] == []
    assert ns.n == 9
    assert sorted(np.argmax(ns.head[: ns.n], axis=1).tolist()) == list(range(9))


async def test_concurrent_async_lookups_share_one_rebuild(redis, small_segments):
    writer = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    m = vectors(120, 64, 22)
    for i, v in enumerate(m):
        writer.set(f"q{i}", v, [], embedding_model="m64", top_k=3)
    fresh = RAGQueryCache(redis, policies=StaticPolicies(), index=RAGIndex())
    hits = await asyncio.gather(
        *[fresh.aget(f"p{i}", nudge(m[i], i), embedding_model="m64", top_k=3) for i in range(0, 120, 3)]
    )
    assert [h.query if h else None for h in hits] == [f"q{i}" for i in range(0, 120, 3)]
    assert rows(fresh) == 120
