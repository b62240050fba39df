"""Request batching benchmark: batched vs unbatched against a SIMULATED LLM, in one run.

    .venv/bin/python benchmarks/batching.py            # ~30 s on 2 cores

Load: ``--requests`` distinct prompts sent by ``--concurrency`` closed-loop callers.
The simulated LLM (batching_app.llm.SimulatedLLM, not a model) answers every prompt with
``--answer-tokens`` tokens and takes ``overhead + per_token * output_tokens``: a combined
call of 5 prompts produces ~5x the output and takes correspondingly longer. Two provider
set-ups are measured:

* ``unlimited``: the provider accepts any number of concurrent calls;
* ``limited``: at most ``--provider-concurrency`` calls in flight (a rate-limited account).

Reported for each: upstream calls, input/output tokens (estimated at 4 chars/token),
wall time, p50/p99 caller latency. Separately, the batcher's own CPU time per request is
measured with a zero-latency LLM: process time of the batched run minus the direct run,
with the simulated model's own CPU time subtracted from both (target <= 100 us).

Prints a table and one JSON line (prefix ``JSON``). No Redis, database or network needed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mgecache_site.settings")

from batching_app.batcher import RequestBatcher, StaticBatchPolicy  # noqa: E402
from batching_app.llm import SimulatedLLM  # noqa: E402
from cache_app.core import metrics  # noqa: E402
from cache_app.core.policies import BatchSettings  # noqa: E402

WORDS = (
    *("plan", "atom", "module", "function", "test", "schema", "endpoint"),
    *("cache", "retry", "token", "budget", "wave", "graph", "node"),
)


def make_prompts(count: int, words: int) -> list[str]:
    """Distinct prompts of ~``words`` words (no two identical: dedupe must not flatter the figures)."""
    prompts = []
    for i in range(count):
        body = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words))
        prompts.append(f"Atom {i}: write the code for step {i} of the masterplan. Context: {body}.")
    return prompts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def drive(call: Callable[[uuid.UUID, str], Awaitable[str]], prompts: list[str], concurrency: int) -> dict:
    """Closed loop: ``concurrency`` callers, each sending its next prompt when the previous returns."""
    queue = list(reversed(prompts))
    latencies: list[float] = []

    async def worker() -> None:
        while queue:
            prompt = queue.pop()
            started = time.perf_counter()
            await call(uuid.uuid4(), prompt)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"wall_s": time.perf_counter() - started, "latencies": latencies}


async def run_mode(batched: bool, prompts: list[str], args: argparse.Namespace, provider_limit: int | None) -> dict:
    llm = SimulatedLLM(
        overhead_s=args.overhead_ms / 1000,
        per_output_token_s=args.per_token_ms / 1000,
        answer_tokens=args.answer_tokens,
        max_concurrency=provider_limit,
    )
    fallbacks_before = metrics.BATCH_PARSE_FALLBACKS._value.get()
    if batched:
        batcher = RequestBatcher(
            llm, policies=StaticBatchPolicy(BatchSettings(True, args.max_batch_size, args.window_ms))
        )
        result = await drive(batcher.execute_with_batching, prompts, args.concurrency)
        await batcher.aclose()
    else:

        async def direct(atom_id: uuid.UUID, prompt: str) -> str:
            return await llm(prompt)

        result = await drive(direct, prompts, args.concurrency)
    lat = result["latencies"]
    return {
        "upstream_calls": llm.calls,
        "input_tokens": llm.input_tokens,
        "output_tokens": llm.output_tokens,
        "wall_s": round(result["wall_s"], 3),
        "p50_ms": round(percentile(lat, 50) * 1000, 1),
        "p99_ms": round(percentile(lat, 99) * 1000, 1),
        "mean_ms": round(statistics.fmean(lat) * 1000, 1),
        "parse_fallbacks": int(metrics.BATCH_PARSE_FALLBACKS._value.get() - fallbacks_before),
    }


async def cpu_once(batched: bool, prompts: list[str], args: argparse.Namespace) -> tuple[float, float]:
    """(process seconds for the whole run, of which the simulated model's own) with zero latency."""
    llm = SimulatedLLM(answer_tokens=args.answer_tokens)
    batcher = RequestBatcher(llm, policies=StaticBatchPolicy(BatchSettings(True, args.max_batch_size, args.window_ms)))

    async def direct(atom_id: uuid.UUID, prompt: str) -> str:
        return await llm(prompt)

    gc.collect()
    started = time.process_time()
    await drive(batcher.execute_with_batching if batched else direct, prompts, args.concurrency)
    await batcher.aclose()
    return time.process_time() - started, llm.cpu_seconds


async def cpu_overhead_us(args: argparse.Namespace) -> dict:
    prompts = make_prompts(args.cpu_requests, args.prompt_words)
    best = None
    for _ in range(args.cpu_repeats):
        direct_total, direct_model = await cpu_once(False, prompts, args)
        batched_total, batched_model = await cpu_once(True, prompts, args)
        overhead = ((batched_total - batched_model) - (direct_total - direct_model)) / len(prompts)
        best = overhead if best is None else min(best, overhead)
    return {
        "batcher_cpu_us_per_request": round(best * 1e6, 1),
        "direct_cpu_us_per_request": round((direct_total - direct_model) / len(prompts) * 1e6, 1),
        "requests": len(prompts),
    }


def table(results: dict) -> str:
    rows = [
        ("upstream calls", "upstream_calls", "{:d}"),
        ("input tokens", "input_tokens", "{:d}"),
        ("output tokens", "output_tokens", "{:d}"),
        ("wall time (s)", "wall_s", "{:.2f}"),
        ("p50 latency (ms)", "p50_ms", "{:.1f}"),
        ("p99 latency (ms)", "p99_ms", "{:.1f}"),
        ("parse fallbacks", "parse_fallbacks", "{:d}"),
    ]
    lines = []
    for scenario, data in results.items():
        lines.append(f"\n[{scenario}]")
        lines.append(f"{'':22}{'unbatched':>12}{'batched':>12}{'batched/unbatched':>20}")
        for label, key, fmt in rows:
            u, b = data["unbatched"][key], data["batched"][key]
            ratio = f"{b / u:.2f}x" if u else "-"
            lines.append(f"{label:22}{fmt.format(u):>12}{fmt.format(b):>12}{ratio:>20}")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--overhead-ms", type=float, default=40.0, help="simulated per-call overhead")
    parser.add_argument("--per-token-ms", type=float, default=0.5, help="simulated time per output token")
    parser.add_argument("--answer-tokens", type=int, default=40, help="output tokens per answer")
    parser.add_argument("--prompt-words", type=int, default=40)
    parser.add_argument("--max-batch-size", type=int, default=5)
    parser.add_argument("--window-ms", type=int, default=500)
    parser.add_argument("--provider-concurrency", type=int, default=10, help="the 'limited' scenario's cap")
    parser.add_argument("--cpu-requests", type=int, default=10000)
    parser.add_argument("--cpu-repeats", type=int, default=3)
    args = parser.parse_args()

    prompts = make_prompts(args.requests, args.prompt_words)
    results: dict = {}
    for scenario, limit in (("unlimited", None), (f"limited_{args.provider_concurrency}", args.provider_concurrency)):
        results[scenario] = {
            "unbatched": await run_mode(False, prompts, args, limit),
            "batched": await run_mode(True, prompts, args, limit),
        }
    cpu = await cpu_overhead_us(args)

    print(
        f"Request batching, SIMULATED LLM: {args.requests} requests, concurrency {args.concurrency}, "
        f"latency {args.overhead_ms:g} ms + {args.per_token_ms:g} ms/output token, "
        f"{args.answer_tokens} tokens per answer, batch <= {args.max_batch_size} / {args.window_ms} ms"
    )
    print(table(results))
    target = "OK" if cpu["batcher_cpu_us_per_request"] <= 100 else "OVER TARGET"
    print(
        f"\nbatcher CPU overhead: {cpu['batcher_cpu_us_per_request']} us/request "
        f"(target <= 100 us: {target}; a direct call costs {cpu['direct_cpu_us_per_request']} us; "
        f"{cpu['requests']} requests, zero-latency LLM, best of {args.cpu_repeats})"
    )
    print(
        "JSON "
        + json.dumps(
            {
                "benchmark": "batching",
                "config": {k: v for k, v in vars(args).items()},
                "results": results,
                "cpu": cpu,
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
