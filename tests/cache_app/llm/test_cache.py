"""LLMPromptCache: keys, hits, TTL and policy, store rules, invalidation, corruption, metrics, async twins.

Runs on the configured Redis (real in CI, fakeredis otherwise); tests marked redis_server
need the real one. Outages and cross-process behaviour: test_llm_cache_resilience.py.
"""

from __future__ import annotations

import threading
import uuid

import msgpack
import pytest
from prometheus_client import REGISTRY

from cache_app.core import keys
from cache_app.core.policies import DatabasePolicySource
from cache_app.llm.cache import CachedLLMResponse, LLMPromptCache, normalize_temperature
from cache_app.models import CachePolicy
from cache_app.tasks import reclaim_dead_keys, reclaim_llm_masterplan
from tests.conftest import StaticPolicies, run_python

MODEL = "claude-3-5-sonnet"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"cache_layer": "llm", **labels}) or 0.0


@pytest.fixture
def cache(redis) -> LLMPromptCache:
    return LLMPromptCache(redis, policies=StaticPolicies())


def put(cache: LLMPromptCache, prompt: str, text: str = "an answer", **kwargs) -> bool:
    kwargs.setdefault("prompt_tokens", 10)
    kwargs.setdefault("completion_tokens", 20)
    return cache.set(prompt, MODEL, 0, text, **kwargs)


def scope_keys(redis, masterplan_id) -> list[bytes]:
    return list(redis.scan_iter(match=keys.llm_scope_pattern(masterplan_id), count=10_000))


# --- keys -------------------------------------------------------------------------------------

KEY_CHILD = """
from cache_app.llm.cache import LLMPromptCache
c = LLMPromptCache()
print(c.key_for("Write a haiku", "claude-3-5-sonnet", 0.7, masterplan_id="{mp}",
                system="be brief", max_tokens=256, stop=["\\n\\n", "END"], top_p=0.9, metadata={{"b": 1, "a": 2}}))
print(hash("Write a haiku"))
"""


def test_key_is_deterministic_across_processes_with_different_hash_seeds(cache, subprocess_env):
    mp = str(uuid.uuid4())
    outputs = []
    for seed in ("1", "4242"):
        env = {**subprocess_env, "PYTHONHASHSEED": seed}
        outputs.append(run_python(KEY_CHILD.format(mp=mp), env).stdout.split())
    (key_a, hash_a), (key_b, hash_b) = outputs
    assert hash_a != hash_b  # the seeds really differ, so hash() would have broken the key
    assert key_a == key_b
    here = cache.key_for(
        "Write a haiku",
        MODEL,
        0.70,
        masterplan_id=mp.upper(),
        metadata={"a": 2, "b": 1},
        top_p=0.90,
        stop=("\n\n", "END"),
        max_tokens=256,
        system="be brief",
    )
    assert here == key_a
    assert key_a.startswith(f"{keys.prefix()}llm:{{{mp}}}:")
    assert len(key_a.rsplit(":", 1)[1]) == 64


def test_keys_follow_the_configured_prefix(cache, settings):
    before = cache.key_for("p", MODEL, 0)
    settings.MGECACHE = {**settings.MGECACHE, "KEY_PREFIX": "another-prefix"}
    after = cache.key_for("p", MODEL, 0)
    assert after == "another-prefix:v2:llm:{global}:" + before.rsplit(":", 1)[1]
    assert keys.llm_lookup(None, before.rsplit(":", 1)[1])[2] == after


def test_temperature_and_number_normalisation(cache):
    assert cache.key_for("p", MODEL, 0.7) == cache.key_for("p", MODEL, 0.70) == cache.key_for("p", MODEL, 0.1 * 7)
    assert cache.key_for("p", MODEL, 0) == cache.key_for("p", MODEL, 0.0) == cache.key_for("p", MODEL, -0.0)
    assert cache.key_for("p", MODEL, 1) == cache.key_for("p", MODEL, "1.0")
    assert cache.key_for("p", MODEL, 0, top_p=1) == cache.key_for("p", MODEL, 0, top_p=1.0)
    assert cache.key_for("p", MODEL, 0, system=None) == cache.key_for("p", MODEL, 0)  # None == not given
    assert normalize_temperature(0.7000000001) == 0.7
    for bad in (-0.1, float("nan"), float("inf"), "warm"):
        with pytest.raises(ValueError):
            cache.key_for("p", MODEL, bad)


def test_key_changes_with_every_input(cache):
    base = dict(system="s", max_tokens=100, stop=["x"], top_p=0.9)
    reference = cache.key_for("prompt", MODEL, 0.2, **base)
    variants = [
        cache.key_for("prompt ", MODEL, 0.2, **base),
        cache.key_for("prompt", "gpt-4o", 0.2, **base),
        cache.key_for("prompt", MODEL, 0.3, **base),
        cache.key_for("prompt", MODEL, 0.2, **{**base, "system": "t"}),
        cache.key_for("prompt", MODEL, 0.2, **{**base, "max_tokens": 101}),
        cache.key_for("prompt", MODEL, 0.2, **{**base, "stop": ["y"]}),
        cache.key_for("prompt", MODEL, 0.2, **{**base, "top_p": 0.95}),
        cache.key_for("prompt", MODEL, 0.2, **base, seed=1),
        cache.key_for("prompt", MODEL, 0.2, **base, masterplan_id=uuid.uuid4()),
        # an ambiguous concatenation must not collide: the encoding is structured
        cache.key_for("prompt", MODEL, 0.2, **{**base, "system": "s", "max_tokens": 100, "stop": ["x", ""]}),
    ]
    assert reference not in variants
    assert len(set(variants)) == len(variants)


@pytest.mark.parametrize("bad", ["*", "global", "../x", "abc\r\nFLUSHALL", "mp-1", 12, 1.5])
def test_masterplan_ids_must_be_uuids(cache, bad):
    with pytest.raises(ValueError):
        cache.get("p", MODEL, 0, masterplan_id=bad)
    with pytest.raises(ValueError):
        cache.invalidate_masterplan(bad)


# --- hits, misses, scopes ------------------------------------------------------------------------


def test_hit_and_miss_and_scope_isolation(cache):
    x, y = uuid.uuid4(), uuid.uuid4()
    assert cache.get("q", MODEL, 0, masterplan_id=x) is None
    cache.set("q", MODEL, 0.0, "for X", prompt_tokens=3, completion_tokens=4, masterplan_id=x, finish_reason="end_turn")
    hit = cache.get("q", MODEL, 0, masterplan_id=str(x))
    assert isinstance(hit, CachedLLMResponse)
    assert (hit.text, hit.model, hit.prompt_tokens, hit.completion_tokens) == ("for X", MODEL, 3, 4)
    assert (hit.finish_reason, hit.masterplan_id) == ("end_turn", str(x))
    assert hit.cached_at > 1_600_000_000
    assert cache.get("q", MODEL, 0, masterplan_id=y) is None  # never another masterplan's entry
    assert cache.get("q", MODEL, 0) is None  # nor the global scope's
    assert cache.get("q", MODEL, 0, masterplan_id=x, max_tokens=10) is None  # different params: different key


def test_values_are_tagged_msgpack_not_pickle(cache, redis):
    put(cache, "q", "hello")
    raw = redis.get(cache.key_for("q", MODEL, 0))
    tag, _, payload = raw.partition(b"|")
    assert tag == b"e0g0"
    assert msgpack.unpackb(payload)[1:3] == ["hello", MODEL]
    assert not raw.startswith(b"\x80")  # a pickle protocol header


# --- TTL and policy ------------------------------------------------------------------------------


def test_ttl_follows_the_policy_and_can_be_overridden(redis):
    cache = LLMPromptCache(redis, policies=StaticPolicies(ttl_seconds=1234))
    put(cache, "a")
    put(cache, "b", ttl=77)
    assert redis.ttl(cache.key_for("a", MODEL, 0)) in (1233, 1234)
    assert redis.ttl(cache.key_for("b", MODEL, 0)) in (76, 77)
    with pytest.raises(ValueError):
        put(cache, "c", ttl=0)


@pytest.mark.django_db
def test_policy_edit_is_picked_up_within_the_refresh_bound(redis, clock):
    source = DatabasePolicySource(refresh_seconds=2.0, clock=clock)  # the production bound is <= 5 s
    cache = LLMPromptCache(redis, policies=source)
    put(cache, "before")
    assert redis.ttl(cache.key_for("before", MODEL, 0)) in (86399, 86400)  # the seeded 24 h default
    CachePolicy.objects.filter(layer="llm").update(ttl_seconds=600)  # as another process would
    clock.advance(2.0)
    put(cache, "after")
    assert redis.ttl(cache.key_for("after", MODEL, 0)) in (599, 600)
    CachePolicy.objects.filter(layer="llm").update(enabled=False)
    clock.advance(2.0)
    assert cache.get("after", MODEL, 0) is None  # disabled: bypassed, not served
    put(cache, "while-disabled")
    assert not redis.exists(cache.key_for("while-disabled", MODEL, 0))


@pytest.mark.django_db(transaction=True)
def test_a_policy_saved_in_this_process_applies_at_once(redis, seeded_defaults):
    cache = LLMPromptCache(redis)  # the process-wide policy source (and the cache's short memo)
    put(cache, "q")
    assert cache.get("q", MODEL, 0) is not None
    policy = CachePolicy.objects.get(layer="llm")
    policy.enabled = False
    policy.save()  # committed: the source and the memo are both dropped
    assert cache.get("q", MODEL, 0) is None
    policy.enabled, policy.ttl_seconds = True, 321
    policy.save()
    put(cache, "r")
    assert redis.ttl(cache.key_for("r", MODEL, 0)) in (320, 321)


def test_store_rules(redis):
    skipped = {r: sample("mgecache_cache_skipped_writes_total", reason=r) for r in ("empty", "truncated", "disabled")}
    strict = LLMPromptCache(redis, policies=StaticPolicies(cache_nonzero_temperature=False))
    put(strict, "empty", "")
    put(strict, "blank", "  \n")
    put(strict, "cut", finish_reason="length")
    put(strict, "cut2", finish_reason="max_tokens")
    strict.set("warm", MODEL, 0.7, "x", prompt_tokens=1, completion_tokens=1)
    put(strict, "fine", finish_reason="stop")
    for prompt in ("empty", "blank", "cut", "cut2"):
        assert not redis.exists(strict.key_for(prompt, MODEL, 0))
    assert not redis.exists(strict.key_for("warm", MODEL, 0.7))
    assert strict.get("fine", MODEL, 0) is not None
    assert sample("mgecache_cache_skipped_writes_total", reason="empty") == skipped["empty"] + 2
    assert sample("mgecache_cache_skipped_writes_total", reason="truncated") == skipped["truncated"] + 2

    lenient = LLMPromptCache(redis, policies=StaticPolicies(cache_truncated=True))
    put(lenient, "cut", finish_reason="length")
    lenient.set("warm", MODEL, 0.7, "x", prompt_tokens=1, completion_tokens=1)  # cached by default
    assert lenient.get("cut", MODEL, 0).finish_reason == "length"
    assert lenient.get("warm", MODEL, 0.70) is not None
    assert strict.get("warm", MODEL, 0.7) is None  # a policy that refuses warm answers does not serve them

    disabled = LLMPromptCache(redis, policies=StaticPolicies(enabled=False))
    put(disabled, "off")
    assert not redis.exists(disabled.key_for("off", MODEL, 0))
    assert sample("mgecache_cache_skipped_writes_total", reason="disabled") == skipped["disabled"] + 1
    with pytest.raises(ValueError):
        put(lenient, "bad-count", prompt_tokens=-1)


# --- invalidation --------------------------------------------------------------------------------


@pytest.mark.redis_server
def test_invalidation_of_one_masterplan_among_10k_entries(redis):
    cache = LLMPromptCache(redis, policies=StaticPolicies())
    plans = [uuid.uuid4() for _ in range(3)]
    per_plan = {mp: [f"prompt {i} of {mp}" for i in range(3334)] for mp in plans}
    for mp, prompts in per_plan.items():
        for prompt in prompts:
            put(cache, prompt, f"answer to {prompt}", masterplan_id=mp)
    put(cache, "global prompt")
    target, *others = plans
    assert cache.get(per_plan[target][0], MODEL, 0, masterplan_id=target) is not None

    removed = cache.invalidate_masterplan(target)

    assert removed == 3334
    assert scope_keys(redis, target) == []
    assert all(cache.get(p, MODEL, 0, masterplan_id=target) is None for p in per_plan[target][::50])
    for mp in others:
        assert len(scope_keys(redis, mp)) == 3334
        assert all(cache.get(p, MODEL, 0, masterplan_id=mp).text == f"answer to {p}" for p in per_plan[mp][::50])
    assert cache.get("global prompt", MODEL, 0) is not None
    # the scope keeps working under its new generation
    put(cache, per_plan[target][0], "fresh", masterplan_id=target)
    assert cache.get(per_plan[target][0], MODEL, 0, masterplan_id=target).text == "fresh"


def test_logical_invalidation_is_immediate_even_before_reclaim(cache, redis):
    mp = uuid.uuid4()
    for i in range(20):
        put(cache, f"p{i}", masterplan_id=mp)
    assert cache.invalidate_masterplan(mp, reclaim="none") == 0
    assert all(cache.get(f"p{i}", MODEL, 0, masterplan_id=mp) is None for i in range(20))
    assert len(scope_keys(redis, mp)) == 20  # unreachable, not yet deleted
    put(cache, "p0", "written after the invalidation", masterplan_id=mp)  # overwrites a dead entry
    put(cache, "new", masterplan_id=mp)
    assert cache.reclaim_masterplan(mp) == 19  # the live entries (current tag) are kept
    assert cache.get("p0", MODEL, 0, masterplan_id=mp).text == "written after the invalidation"
    assert cache.invalidate_masterplan(mp, reclaim="celery") == 0  # eager Celery in tests: deleted by the task
    assert scope_keys(redis, mp) == []
    with pytest.raises(ValueError):
        cache.invalidate_masterplan(mp, reclaim="later")


def test_a_set_that_raced_an_invalidation_cannot_resurrect_an_old_answer(cache):
    mp = uuid.uuid4()
    stale_before = sample("mgecache_cache_skipped_writes_total", reason="stale_generation")
    # The miss happens, the LLM is called, meanwhile an operator invalidates the masterplan.
    miss = cache.lookup("q", MODEL, 0, masterplan_id=mp)
    assert miss.hit is None
    cache.invalidate_masterplan(mp)
    assert put(cache, "q", "computed before the invalidation", masterplan_id=mp, token=miss.token) is False
    assert cache.get("q", MODEL, 0, masterplan_id=mp) is None
    assert sample("mgecache_cache_skipped_writes_total", reason="stale_generation") == stale_before + 1
    # The next round trip (miss under the new generation, then set) is cached normally.
    miss = cache.lookup("q", MODEL, 0, masterplan_id=mp)
    assert put(cache, "q", "fresh", masterplan_id=mp, token=miss.token) is True
    assert cache.get("q", MODEL, 0, masterplan_id=mp).text == "fresh"


def test_concurrent_writers_never_resurrect_entries_written_before_the_invalidation(redis):
    cache = LLMPromptCache(redis, policies=StaticPolicies())
    mp = uuid.uuid4()
    lock = threading.Lock()
    completed: set[int] = set()
    seq = iter(range(10**9))
    stop = threading.Event()
    enough = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            with lock:
                n = next(seq)
            put(cache, f"k{n % 25}", f"{n}", masterplan_id=mp)
            with lock:
                completed.add(n)
                if len(completed) >= 200:
                    enough.set()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    assert enough.wait(timeout=30)
    with lock:
        written_before = set(completed)
    cache.invalidate_masterplan(mp)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    for i in range(25):
        hit = cache.get(f"k{i}", MODEL, 0, masterplan_id=mp)
        assert hit is None or int(hit.text) not in written_before


def test_invalidate_all_clears_this_layer_only(cache, redis):
    mp = uuid.uuid4()
    put(cache, "g")
    put(cache, "m", masterplan_id=mp)
    neighbour = f"{keys.prefix()}rag:not-ours"
    outsider = f"other-app-{uuid.uuid4().hex}"
    redis.set(neighbour, b"keep")
    redis.set(outsider, b"keep", ex=60)
    try:
        assert cache.invalidate_all() == 2
        assert cache.get("g", MODEL, 0) is None
        assert cache.get("m", MODEL, 0, masterplan_id=mp) is None
        assert redis.get(neighbour) == b"keep"
        assert redis.get(outsider) == b"keep"
        put(cache, "g", "new epoch")
        assert cache.get("g", MODEL, 0).text == "new epoch"
    finally:
        redis.unlink(outsider)


def test_reclaim_tasks_report_what_they_removed(cache, redis):
    a, b = uuid.uuid4(), uuid.uuid4()
    for i in range(5):
        put(cache, f"a{i}", masterplan_id=a)
        put(cache, f"b{i}", masterplan_id=b)
    redis.incr(keys.llm_generation(a))  # logical invalidations without inline deletion
    redis.incr(keys.llm_generation(b))
    assert reclaim_llm_masterplan.delay(str(a)).get() == 5
    assert reclaim_llm_masterplan.delay(str(a)).get() == 0  # idempotent
    put(cache, "b-live", masterplan_id=b)
    assert reclaim_dead_keys.delay().get()["llm"] == 5
    assert cache.get("b-live", MODEL, 0, masterplan_id=b) is not None


@pytest.mark.redis_server
@pytest.mark.celery_worker
def test_reclaim_task_on_a_real_worker(cache, redis, celery_worker):
    mp = uuid.uuid4()
    for i in range(30):
        put(cache, f"p{i}", masterplan_id=mp)
    redis.incr(keys.llm_generation(mp))
    result = reclaim_llm_masterplan.apply_async(args=[str(mp)], queue=celery_worker)
    assert result.get(timeout=30) == 30
    assert scope_keys(redis, mp) == []


# --- corruption ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage without a tag",
        b"e0g0|\xc1\xc1 not msgpack",
        b"e0g0|" + msgpack.packb([1, "", MODEL, 1, 1, 1.0, None, None]),  # empty text
        b"e0g0|" + msgpack.packb([1, "x", MODEL, -1, 1, 1.0, None, None]),  # negative count
        b"e0g0|" + msgpack.packb({"v": 1, "text": "x", "model": MODEL}),
        b"e0g0|" + msgpack.packb([1, 2, 3]),
        b"\x80\x04\x95 pickle-looking",
    ],
)
def test_a_corrupt_value_is_a_miss_and_is_deleted(cache, redis, raw):
    key = cache.key_for("q", MODEL, 0)
    redis.set(key, raw)
    errors = sample("mgecache_cache_errors_total", operation="corrupt")
    misses = sample("mgecache_cache_misses_total")
    assert cache.get("q", MODEL, 0) is None
    assert not redis.exists(key)
    assert sample("mgecache_cache_errors_total", operation="corrupt") == errors + 1
    assert sample("mgecache_cache_misses_total") == misses + 1


def test_an_entry_for_another_model_is_rejected(cache, redis):
    put(cache, "q")
    key = cache.key_for("q", MODEL, 0)
    tag, _, payload = redis.get(key).partition(b"|")
    data = msgpack.unpackb(payload)
    data[2] = "someone-else"
    redis.set(key, tag + b"|" + msgpack.packb(data))
    assert cache.get("q", MODEL, 0) is None
    assert not redis.exists(key)


# --- metrics and statistics ------------------------------------------------------------------------


def test_metrics_and_durable_counters_increment(cache):
    mp = uuid.uuid4()
    names = ("hits", "misses", "writes", "invalidations")
    before = {n: sample(f"mgecache_cache_{n}_total") for n in names}
    lookups_before = sample("mgecache_cache_lookup_seconds_count")
    assert cache.hit_rate() == 0.0  # no lookups yet
    cache.get("q", MODEL, 0, masterplan_id=mp)
    put(cache, "q", masterplan_id=mp)
    cache.get("q", MODEL, 0, masterplan_id=mp)
    cache.get("q", MODEL, 0, masterplan_id=mp)
    cache.invalidate_masterplan(mp)
    after = {n: sample(f"mgecache_cache_{n}_total") for n in names}
    assert {n: after[n] - before[n] for n in names} == {"hits": 2, "misses": 1, "writes": 1, "invalidations": 1}
    assert sample("mgecache_cache_lookup_seconds_count") == lookups_before + 3
    assert cache.hit_rate() == pytest.approx(2 / 3)
    stats = cache.stats(mp)
    assert (stats["hits"], stats["misses"], stats["writes"], stats["invalidations"]) == (2, 1, 1, 1)
    assert cache.stats(uuid.uuid4()) == {}
    # another instance in this process (e.g. the statistics endpoint's) sees the same totals
    assert LLMPromptCache(policies=StaticPolicies()).stats(mp)["hits"] == 2


# --- async twins ----------------------------------------------------------------------------------


async def test_async_twins(redis):
    cache = LLMPromptCache(policies=StaticPolicies())  # default clients: the configured server
    x, y = uuid.uuid4(), uuid.uuid4()
    assert await cache.aget("q", MODEL, 0.7, masterplan_id=x, system="s") is None
    await cache.aset(
        "q", MODEL, 0.70, "async answer", prompt_tokens=1, completion_tokens=2, masterplan_id=x, system="s"
    )
    await cache.aset("q", MODEL, 0.7, "y answer", prompt_tokens=1, completion_tokens=2, masterplan_id=y, system="s")
    hit = await cache.aget("q", MODEL, 0.7, masterplan_id=x, system="s")
    assert hit.text == "async answer"
    assert hit.completion_tokens == 2
    assert cache.get("q", MODEL, 0.7, masterplan_id=x, system="s") == hit  # sync and async share entries
    assert redis.ttl(cache.key_for("q", MODEL, 0.7, masterplan_id=x, system="s")) > 86000

    assert await cache.ainvalidate_masterplan(x) == 1
    assert await cache.aget("q", MODEL, 0.7, masterplan_id=x, system="s") is None
    assert (await cache.aget("q", MODEL, 0.7, masterplan_id=y, system="s")).text == "y answer"

    # the race guard works on the async path too
    miss = await cache.alookup("r", MODEL, 0, masterplan_id=y)
    assert miss.hit is None
    await cache.ainvalidate_masterplan(y)
    stored = await cache.aset(
        "r", MODEL, 0, "stale", prompt_tokens=1, completion_tokens=1, masterplan_id=y, token=miss.token
    )
    assert stored is False
    assert await cache.aget("r", MODEL, 0, masterplan_id=y) is None


async def test_async_twin_on_an_injected_client(redis):
    cache = LLMPromptCache(redis, policies=StaticPolicies())  # async client derived from the sync one
    await cache.aset("q", MODEL, 0, "derived", prompt_tokens=1, completion_tokens=1)
    assert cache.get("q", MODEL, 0).text == "derived"
    assert (await cache.aget("q", MODEL, 0)).text == "derived"
