"""LLM prompt cache benchmark. Every baseline is measured in the same run.

    .venv/bin/python benchmarks/llm_cache.py            # REDIS_URL, else redis://127.0.0.1:6379/12

Measures, against one Redis:
  1. raw redis-py GET of a 2 KB value vs LLMPromptCache.get hits of the same size (medians, ratio);
  2. raw redis.asyncio GET vs aget;
  3. invalidating a masterplan with 100k entries while 100k others exist: time until its
     entries are unreachable (and the same for a 10-entry masterplan), then the physical
     deletion rate (SCAN + Lua-batched UNLINK);
  4. get latency with Redis unreachable (refused port, blackholed port, and a private
     redis-server stopped in the middle of a multi-threaded run when the binary exists).

Keys live under a unique MGECACHE_KEY_PREFIX and are removed with SCAN + UNLINK at the end.
Prints a table and one JSON line. Options: --entries N (default 100000), --samples N.

    .venv/bin/python benchmarks/llm_cache.py --profile 30000

instead prints pyinstrument's call tree for that many sync ``get`` and async ``aget`` hits
(``pip install pyinstrument`` anywhere on PYTHONPATH; a profiler, not a project dependency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mgecache_site.settings")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("DJANGO_SECRET_KEY", "benchmark-only-not-a-secret")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "localhost")
os.environ["MGECACHE_KEY_PREFIX"] = f"mgecache-bench-{uuid.uuid4().hex[:10]}"

import django  # noqa: E402

django.setup()

import redis as redis_lib  # noqa: E402

from cache_app.core import conf, keys, tags  # noqa: E402
from cache_app.core.redis_client import CircuitBreaker, get_async_redis, get_redis  # noqa: E402
from cache_app.llm.cache import LLMPromptCache, codec  # noqa: E402
from cache_app.llm.cache.wire import SyncMget  # noqa: E402

MODEL = "claude-3-5-sonnet"
RUNS = 5  # the hit ratios are the median of this many runs (each itself a median of interleaved samples)
VALUE_BYTES = 2048
TARGETS = {
    "sync_ratio": 1.25,
    "async_ratio": 1.25,
    "invalidation_ms": 10.0,
    "cleanup_keys_per_s": 50_000,
    "down_p99_ms": 5.0,
}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


async def atimed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


def text_of(size: int) -> str:
    return ("The cached answer. " * (size // 19 + 1))[:size]


def of_runs(runs: list[dict]) -> dict:
    """The median of RUNS runs for every figure; each run's ratio is kept too."""
    out = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    out["ratios"] = [run["ratio"] for run in runs]
    out["runs"] = len(runs)
    return out


def bench_sync(cache: LLMPromptCache, client: redis_lib.Redis, samples: int) -> dict:
    cache.set("sync prompt", MODEL, 0, text_of(VALUE_BYTES), prompt_tokens=500, completion_tokens=400)
    raw_key = f"{keys.prefix()}bench:raw"
    client.set(raw_key, os.urandom(VALUE_BYTES))
    stored = len(client.get(cache.key_for("sync prompt", MODEL, 0)))
    assert cache.get("sync prompt", MODEL, 0) is not None
    # The physical limit: a GET of the same key over the hit path's own lean exchange (wire.py).
    lean = SyncMget(client)
    timed(lambda: client.get(raw_key), 500)  # warm up every path
    timed(lambda: cache.get("sync prompt", MODEL, 0), 500)
    timed(lambda: lean((raw_key,)), 500)
    runs = []
    for _ in range(RUNS):
        raw, hit, floor, rounds = [], [], [], 40
        for _ in range(rounds):  # interleaved blocks: machine noise hits every side alike
            raw += timed(lambda: client.get(raw_key), samples // rounds)
            hit += timed(lambda: cache.get("sync prompt", MODEL, 0), samples // rounds)
            floor += timed(lambda: lean((raw_key,)), samples // rounds)
        runs.append(
            {
                "raw_median_us": statistics.median(raw) * 1e6,
                "hit_median_us": statistics.median(hit) * 1e6,
                "lean_get_median_us": statistics.median(floor) * 1e6,
                "raw_p99_us": percentile(raw, 0.99) * 1e6,
                "hit_p99_us": percentile(hit, 0.99) * 1e6,
                "ratio": statistics.median(hit) / statistics.median(raw),
                "ratio_to_lean_get": statistics.median(hit) / statistics.median(floor),
            }
        )
    lean.close()
    return {**of_runs(runs), "stored_value_bytes": stored}


async def bench_async(cache: LLMPromptCache, samples: int) -> dict:
    client = get_async_redis()
    await cache.aset("async prompt", MODEL, 0, text_of(VALUE_BYTES), prompt_tokens=500, completion_tokens=400)
    raw_key = f"{keys.prefix()}bench:araw"
    await client.set(raw_key, os.urandom(VALUE_BYTES))
    assert await cache.aget("async prompt", MODEL, 0) is not None
    await atimed(lambda: client.get(raw_key), 500)
    await atimed(lambda: cache.aget("async prompt", MODEL, 0), 500)
    runs = []
    for _ in range(RUNS):
        raw, hit, rounds = [], [], 40
        for _ in range(rounds):
            raw += await atimed(lambda: client.get(raw_key), samples // rounds)
            hit += await atimed(lambda: cache.aget("async prompt", MODEL, 0), samples // rounds)
        runs.append(
            {
                "raw_median_us": statistics.median(raw) * 1e6,
                "hit_median_us": statistics.median(hit) * 1e6,
                "ratio": statistics.median(hit) / statistics.median(raw),
            }
        )
    await client.aclose()
    return of_runs(runs)


def populate(cache: LLMPromptCache, client: redis_lib.Redis, masterplan_id, n: int, tag: str) -> None:
    """n entries in the cache's stored format, pipelined 2000 at a time (setup, not measured).

    Equivalent to n ``cache.set`` calls (same keys, tag, value and TTL), only without a
    round trip each, so that 200k entries take seconds.
    """
    epoch_key, gen_key, _ = keys.llm_lookup(masterplan_id, "0" * 64)
    current = tags.make_tag(*client.mget(epoch_key, gen_key))
    ttl = cache.policies.llm().ttl_seconds
    for start in range(0, n, 2000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 2000)):
            response = codec.CachedLLMResponse(f"answer {i}", MODEL, 10, 20, time.time(), None, None)
            pipe.set(
                cache.key_for(f"{tag} prompt {i}", MODEL, 0, masterplan_id=masterplan_id),
                current + codec.encode(response),
                ex=ttl,
            )
        pipe.execute()


def bench_invalidation(cache: LLMPromptCache, client: redis_lib.Redis, entries: int) -> dict:
    target, small = uuid.uuid4(), uuid.uuid4()
    others = [uuid.uuid4() for _ in range(4)]
    t0 = time.perf_counter()
    populate(cache, client, target, entries, "target")
    for mp in others:
        populate(cache, client, mp, entries // len(others), "other")
    populate(cache, client, small, 10, "small")
    populate_s = time.perf_counter() - t0
    assert cache.get("target prompt 0", MODEL, 0, masterplan_id=target) is not None

    def logical(mp) -> float:
        t = time.perf_counter()
        cache.invalidate_masterplan(mp, reclaim="none")
        return time.perf_counter() - t

    big_s = logical(target)
    unreachable = all(
        cache.get(f"target prompt {i}", MODEL, 0, masterplan_id=target) is None
        for i in range(0, entries, entries // 50)
    )
    others_intact = all(cache.get("other prompt 7", MODEL, 0, masterplan_id=mp) is not None for mp in others)
    small_s = logical(small)
    t = time.perf_counter()
    removed = cache.reclaim_masterplan(target)
    cleanup_s = time.perf_counter() - t
    remaining = sum(1 for _ in client.scan_iter(match=keys.llm_scope_pattern(target), count=10_000))
    return {
        "entries": entries,
        "other_entries": entries // len(others) * len(others),
        "populate_s": populate_s,
        "logical_ms_100k": big_s * 1e3,
        "logical_ms_10": small_s * 1e3,
        "unreachable_after_return": unreachable,
        "others_intact": others_intact,
        "removed": removed,
        "remaining_after_cleanup": remaining,
        "cleanup_s": cleanup_s,
        "cleanup_keys_per_s": removed / cleanup_s if cleanup_s else 0.0,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def down_cache(port: int) -> tuple[LLMPromptCache, CircuitBreaker]:
    client = redis_lib.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=0.25, socket_connect_timeout=0.25)
    breaker = CircuitBreaker(probe=client.ping, failure_threshold=1, reset_seconds=1.0, name="bench-llm")
    return LLMPromptCache(client, breaker=breaker), breaker


def bench_unreachable(samples: int) -> dict:
    out = {}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    for name, port in (("refused", free_port()), ("blackholed", listener.getsockname()[1])):
        cache, breaker = down_cache(port)
        t0 = time.perf_counter()
        assert cache.get("p", MODEL, 0) is None
        first = time.perf_counter() - t0
        lat = timed(lambda c=cache: c.get("p", MODEL, 0), samples)
        out[name] = {
            "first_call_ms": first * 1e3,
            "p50_us": statistics.median(lat) * 1e6,
            "p99_ms": percentile(lat, 0.99) * 1e3,
            "max_ms": max(lat) * 1e3,
            "breaker_open": breaker.is_open,
        }
    listener.close()
    return out


def bench_stop_mid_run() -> dict | None:
    """A private redis-server, a get/set loop, and the server stopped (by another thread) 1 s in."""
    binary = shutil.which("redis-server")
    if not binary:
        return None
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    cache, breaker = down_cache(port)
    stopped = threading.Event()

    def stop_server() -> None:
        proc.terminate()
        proc.wait(timeout=10)
        stopped.set()

    before: list[float] = []
    after: list[float] = []
    errors = 0
    timer = threading.Timer(1.0, stop_server)
    timer.start()
    end = time.monotonic() + 3.0
    i = 0
    while time.monotonic() < end:
        was_stopped = stopped.is_set()
        t0 = time.perf_counter()
        try:
            prompt = f"p{i % 100}"
            if cache.get(prompt, MODEL, 0) is None:
                cache.set(prompt, MODEL, 0, "x" * 200, prompt_tokens=1, completion_tokens=1)
        except Exception:
            errors += 1
        (after if was_stopped else before).append(time.perf_counter() - t0)
        i += 1
    timer.join()
    return {
        "calls_before_stop": len(before),
        "calls_after_stop": len(after),
        "exceptions": errors,
        "p50_us_before": statistics.median(before) * 1e6,
        "p50_us_after": statistics.median(after) * 1e6,
        "p99_ms_after": percentile(after, 0.99) * 1e3,
        "max_ms_after": max(after) * 1e3,
        "breaker_open_at_end": breaker.is_open,
    }


def cleanup(client: redis_lib.Redis) -> int:
    removed, batch = 0, []
    for key in client.scan_iter(match=f"{conf.get('KEY_PREFIX')}:*", count=10_000):
        batch.append(key)
        if len(batch) >= 1000:
            removed += client.unlink(*batch)
            batch.clear()
    if batch:
        removed += client.unlink(*batch)
    return removed


def hit_rows(sync: dict, async_: dict) -> list[tuple[str, str, str]]:
    runs = f"median of {sync['runs']} runs"
    return [
        (f"sync raw GET 2 KB, {runs}", f"{sync['raw_median_us']:.1f} us", ""),
        (
            "sync cache.get hit",
            f"{sync['hit_median_us']:.1f} us",
            f"ratio {sync['ratio']:.2f}x (<= 1.25x); runs {', '.join(f'{r:.2f}' for r in sync['ratios'])}",
        ),
        (
            "sync GET over the lean exchange",
            f"{sync['lean_get_median_us']:.1f} us",
            f"hit / this floor {sync['ratio_to_lean_get']:.2f}x",
        ),
        ("sync p99 raw / hit", f"{sync['raw_p99_us']:.0f} / {sync['hit_p99_us']:.0f} us", ""),
        (f"async raw GET 2 KB, {runs}", f"{async_['raw_median_us']:.1f} us", ""),
        (
            "async cache.aget hit",
            f"{async_['hit_median_us']:.1f} us",
            f"ratio {async_['ratio']:.2f}x (<= 1.25x); runs {', '.join(f'{r:.2f}' for r in async_['ratios'])}",
        ),
    ]


def print_hits(sync: dict, async_: dict) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"LLM prompt cache hits: {os.environ['REDIS_URL']} (value {VALUE_BYTES} B, load average {load})")
    for name, value, note in hit_rows(sync, async_):
        print(f"  {name:<36}  {value:<12} {note}")
    print(json.dumps({"benchmark": "llm_cache_hits", "sync": sync, "async": async_}, sort_keys=True))


def profile_hits(cache: LLMPromptCache, calls: int) -> None:
    """pyinstrument's call tree of ``calls`` sync and async hits (where a hit's time goes, not what it costs)."""
    from pyinstrument import Profiler

    cache.set("profiled prompt", MODEL, 0, text_of(VALUE_BYTES), prompt_tokens=500, completion_tokens=400)
    assert cache.get("profiled prompt", MODEL, 0) is not None

    async def ahits() -> None:
        for _ in range(calls):
            await cache.aget("profiled prompt", MODEL, 0)

    for label, run in (
        ("sync get", lambda: [cache.get("profiled prompt", MODEL, 0) for _ in range(calls)]),
        ("async aget", lambda: asyncio.run(ahits())),
    ):
        profiler = Profiler(interval=0.0001)
        with profiler:
            run()
        print(f"\n=== {label}: {calls} hits ===")
        print(profiler.output_text(unicode=False, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--hits-only", action="store_true", help="only the hit ratios (sections 1 and 2)")
    parser.add_argument("--profile", type=int, metavar="CALLS", help="only profile CALLS hits with pyinstrument")
    args = parser.parse_args()

    client = get_redis()
    client.ping()
    # The production policy accessor (re-read every 2 s). Without a migrated database it
    # serves the documented defaults; its warnings are muted here.
    logging.getLogger("cache_app.core.policies").setLevel(logging.ERROR)
    cache = LLMPromptCache()
    try:
        if args.profile:
            profile_hits(cache, args.profile)
            return
        sync = bench_sync(cache, client, args.samples)
        async_ = asyncio.run(bench_async(cache, args.samples))
        if args.hits_only:
            print_hits(sync, async_)
            return
        inval = bench_invalidation(cache, client, args.entries)
        down = bench_unreachable(args.samples)
        mid = bench_stop_mid_run()
    finally:
        cleanup(client)

    worst_down_p99 = max(v["p99_ms"] for v in down.values())
    checks = {
        "sync_hit_le_1.25x_raw_get": sync["ratio"] <= TARGETS["sync_ratio"],
        "async_hit_le_1.25x_raw_get": async_["ratio"] <= TARGETS["async_ratio"],
        "logical_invalidation_le_10ms": max(inval["logical_ms_100k"], inval["logical_ms_10"])
        <= TARGETS["invalidation_ms"]
        and inval["unreachable_after_return"]
        and inval["others_intact"],
        "cleanup_ge_50k_keys_per_s": inval["cleanup_keys_per_s"] >= TARGETS["cleanup_keys_per_s"]
        and inval["remaining_after_cleanup"] == 0,
        "p99_le_5ms_with_redis_down": worst_down_p99 <= TARGETS["down_p99_ms"],
    }
    if mid is not None:
        checks["stop_mid_run_no_exceptions"] = mid["exceptions"] == 0
        checks["stop_mid_run_p99_le_5ms"] = mid["p99_ms_after"] <= TARGETS["down_p99_ms"]

    rows = [
        *hit_rows(sync, async_),
        (
            f"invalidate {inval['entries']:,} entries (+{inval['other_entries']:,} others)",
            f"{inval['logical_ms_100k']:.3f} ms",
            "until unreachable (<= 10 ms)",
        ),
        ("invalidate a 10-entry masterplan", f"{inval['logical_ms_10']:.3f} ms", "same O(1) INCR"),
        (
            "physical cleanup (SCAN + Lua UNLINK)",
            f"{inval['cleanup_keys_per_s']:,.0f} keys/s",
            f"{inval['removed']:,} keys in {inval['cleanup_s']:.2f} s (>= 50k/s)",
        ),
    ]
    for name, d in down.items():
        rows.append(
            (
                f"get, Redis {name}: p50 / p99 / max",
                f"{d['p50_us']:.1f} us / {d['p99_ms']:.3f} ms / {d['max_ms']:.3f} ms",
                f"first call {d['first_call_ms']:.1f} ms (<= 5 ms p99)",
            )
        )
    if mid is not None:
        rows.append(
            (
                "get+set loop, redis-server stopped mid-run",
                f"p99 {mid['p99_ms_after']:.3f} ms, max {mid['max_ms_after']:.1f} ms",
                f"{mid['calls_after_stop']:,} calls after stop, {mid['exceptions']} exceptions",
            )
        )
    width = max(len(r[0]) for r in rows)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"LLM prompt cache benchmark: {os.environ['REDIS_URL']} (value {VALUE_BYTES} B, load average {load})")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:<34} {note}")
    for name, ok in checks.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    print(
        json.dumps(
            {
                "benchmark": "llm_cache",
                "load_average_at_end": os.getloadavg(),
                "sync": sync,
                "async": async_,
                "invalidation": inval,
                "unreachable": down,
                "stop_mid_run": mid,
                "checks": checks,
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
