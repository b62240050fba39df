"""``make bench``: every benchmark, then one summary table.

    .venv/bin/python benchmarks/summary.py                  # all (about 10 minutes)
    .venv/bin/python benchmarks/summary.py --skip-micro     # only the two masterplan runs
    .venv/bin/python benchmarks/summary.py --summary-only   # re-print the table from var/bench/

Runs the micro-benchmarks (benchmarks/llm_cache.py, rag_cache.py, batching.py) and
``manage.py run_masterplan --mode both`` on the shipped ``rerun`` and ``single``
workloads, streaming their output and keeping it under ``var/bench/`` (outputs, JSON
reports, SVG charts). Then prints one table of the headline figures against the targets.
The machine's load is printed too: on a shared machine the figures move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "var" / "bench"
MICRO = ("llm_cache", "rag_cache", "batching")
WORKLOADS = ROOT / "benchmarks" / "workloads"


def stream(command: list[str], log: Path) -> None:
    """Run ``command``, echo its output and keep it in ``log``; a failure stops the bench."""
    print(f"\n$ {' '.join(command)}", flush=True)
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            out.write(line)
        if proc.wait() != 0:
            raise SystemExit(f"{command[1]} failed with exit code {proc.returncode} (output in {log})")


def last_json(log: Path) -> dict[str, Any]:
    for line in reversed(log.read_text(encoding="utf-8").splitlines()):
        text = line.removeprefix("JSON ").strip()
        if text.startswith("{"):
            return json.loads(text)
    raise SystemExit(f"{log}: no JSON result line")


def run_all(skip_micro: bool) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    if not skip_micro:
        for name in MICRO:
            stream([python, f"benchmarks/{name}.py"], OUT / f"{name}.txt")
    for name in ("rerun", "single"):
        stream(
            [
                python,
                "manage.py",
                "run_masterplan",
                "--workload",
                str(WORKLOADS / f"{name}.jsonl"),
                "--documents",
                str(WORKLOADS / "corpus.jsonl"),
                "--mode",
                "both",
                "--report",
                str(OUT / f"{name}.json"),
                "--plot",
                str(OUT / f"{name}.svg"),
            ],
            OUT / f"{name}.txt",
        )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


Row = tuple[str, str, str, bool | None]  # name, figure, target, met (None: no target)


# (label, key of rag_cache.py's verdict, format, target: ("<=" | ">=", bound)); a size not run shows "-".
RAG_ROWS = (
    ("RAG cache: similarity p50 at 10k", "p50_ms_10k", "{:.2f} ms", ("<=", 1.0)),
    ("RAG cache: similarity p50 at 100k (miss/hit worst)", "p50_ms_100k", "{:.2f} ms", ("<=", 1.0)),
    ("RAG cache: similarity p50 at 1M (miss/hit worst)", "p50_ms_1m", "{:.2f} ms", ("<=", 5.0)),
    ("RAG cache: recall of brute force's hits (worst size)", "recall_min", "{:.3f}", (">=", 0.99)),
    ("RAG cache: index bytes per entry at 1M", "index_bytes_per_entry_1m", "{:,.0f} B", ("<=", 800.0)),
    ("RAG cache: first lookup after restart at 1M", "restart_first_lookup_s_1m", "{:.2f} s", ("<=", 10.0)),
    ("RAG cache: speed-up over GPTCache at 10k", "speedup_vs_gptcache_10k", "{:.1f}x", (">=", 10.0)),
    ("RAG cache: speed-up over SCAN at 10k", "speedup_10k", "{:,.0f}x", (">=", 1000.0)),
    ("RAG cache: rebuild of 100k entries", "rebuild_s_100k", "{:.2f} s", ("<=", 2.0)),
)


def _rag_row(label: str, value: float | None, fmt: str, target: tuple[str, float]) -> Row:
    op, bound = target
    shown = f"{op} {bound:g}"
    if value is None:
        return (label, "-", shown, None)
    return (label, fmt.format(value), shown, value <= bound if op == "<=" else value >= bound)


def micro_rows() -> list[Row]:
    rows: list[Row] = []
    if (OUT / "llm_cache.txt").exists():
        llm = last_json(OUT / "llm_cache.txt")
        inval = llm["invalidation"]
        down = max(v["p99_ms"] for v in llm["unreachable"].values())
        rows += [
            ("LLM cache: sync hit / raw GET", f"{llm['sync']['ratio']:.2f}x", "<= 1.25x", llm["sync"]["ratio"] <= 1.25),
            (
                "LLM cache: async hit / raw GET",
                f"{llm['async']['ratio']:.2f}x",
                "<= 1.25x",
                llm["async"]["ratio"] <= 1.25,
            ),
            (
                "LLM cache: 100k-entry masterplan unreachable",
                f"{inval['logical_ms_100k']:.2f} ms",
                "<= 10 ms",
                inval["logical_ms_100k"] <= 10,
            ),
            (
                "LLM cache: physical cleanup",
                f"{inval['cleanup_keys_per_s']:,.0f} keys/s",
                ">= 50k/s",
                inval["cleanup_keys_per_s"] >= 50_000,
            ),
            ("LLM cache: get p99, Redis down (worst)", f"{down:.3f} ms", "<= 5 ms", down <= 5),
        ]
    if (OUT / "rag_cache.txt").exists():
        rag = last_json(OUT / "rag_cache.txt")["verdict"]
        rows += [_rag_row(label, rag.get(key), fmt, bound) for label, key, fmt, bound in RAG_ROWS]
    if (OUT / "batching.txt").exists():
        batching = last_json(OUT / "batching.txt")
        cpu = batching["cpu"]["batcher_cpu_us_per_request"]
        unlimited = batching["results"]["unlimited"]
        calls = f"{unlimited['unbatched']['upstream_calls']} -> {unlimited['batched']['upstream_calls']}"
        rows += [
            ("Batching: batcher CPU per request", f"{cpu} us", "<= 100 us", cpu <= 100),
            ("Batching: upstream calls", calls, "", None),
        ]
    return rows


def masterplan_rows(name: str) -> list[Row]:
    path = OUT / f"{name}.json"
    if not path.exists():
        return []
    report = json.loads(path.read_text(encoding="utf-8"))
    runs = report["comparison"]["runs"]
    scopes = [("run 2", runs["2"], True)] if "2" in runs else []
    scopes.append(("whole workload" if scopes else "cold run", report["comparison"]["total"], False))
    rows: list[Row] = []
    for label, c, strict in scopes:
        for figure, key, target in (
            ("combined hit rate", "combined_hit_rate", 0.60),
            ("cost reduction", "cost_reduction", 0.30),
            ("time reduction (wall)", "time_reduction", 0.40),
        ):
            value = c[key]
            rows.append(
                (
                    f"{name}, {label}: {figure}",
                    _pct(value),
                    f">= {target:.0%}" if strict else "",
                    (value is not None and value >= target) if strict else None,
                )
            )
        calls = f"{c['upstream_calls']['baseline']} -> {c['upstream_calls']['cached']}"
        rows.append((f"{name}, {label}: upstream calls", calls, "", None))
    agree = all(report[m]["agreement"][k]["ok"] for m in ("baseline", "cached") for k in ("statistics", "metrics"))
    rows.append((f"{name}: figures agree with statistics and /metrics", "yes" if agree else "NO", "yes", agree))
    return rows


def print_summary() -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(f"mgecache benchmarks, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} CPUs,")
    print(f"load average {load}, REDIS_URL={os.environ.get('REDIS_URL', '(embedded)')}; outputs in {OUT}")
    rows = micro_rows() + masterplan_rows("rerun") + masterplan_rows("single")
    width = max((len(r[0]) for r in rows), default=20)
    print(f"\n{'benchmark':<{width}}  {'figure':>18}  {'target':>10}  verdict")
    print("-" * (width + 42))
    for name, value, target, met in rows:
        verdict = "" if met is None else ("met" if met else "MISSED")
        print(f"{name:<{width}}  {value:>18}  {target:>10}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-micro", action="store_true", help="only the run_masterplan runs")
    parser.add_argument("--summary-only", action="store_true", help="print the table from earlier outputs")
    args = parser.parse_args()
    if not args.summary_only:
        run_all(args.skip_micro)
    print_summary()


if __name__ == "__main__":
    main()
