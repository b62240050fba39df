"""A cached hit's latency floor: one client, one hit at a time, with and without a pause before each.

    .venv/bin/python benchmarks/load/idle_gap.py --hits 300 --pauses 0,20,100

No load at all: the figures are what a single hit costs on this machine, back to back and after the
machine has been idle for a moment (as a load-test user is after each ~0.1 s miss). Two targets on the
same gunicorn settings: the service (``make load``'s workers, a private redis-server and Postgres database, the
prompts stored through the API, as in ``run.py``) and the empty WSGI app of ``floor.py``. Each hit opens
a new connection, as every request does without keep-alive. Prints p50 / p90 / p99 per target and pause.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from benchmarks.load import run  # noqa: E402
from benchmarks.load.floor import start_floor  # noqa: E402


def post_once(port: int, path: str, body: bytes, headers: dict[str, str]) -> float:
    """Milliseconds for one POST on a fresh connection; raises unless it answers 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    started = time.perf_counter()
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}")
    return (time.perf_counter() - started) * 1000


def quantiles(samples: list[float]) -> str:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return f"{at(0.5):.1f} / {at(0.9):.1f} / {at(0.99):.1f}"


def measure(name: str, hit: Callable[[int], float], hits: int, pauses: list[float]) -> list[str]:
    for n in range(20):  # warm: the first requests of a worker import and connect
        hit(n)
    rows = []
    for pause in pauses:
        samples = []
        for n in range(hits):
            if pause:
                time.sleep(pause / 1000)
            samples.append(hit(n))
        rows.append(f"| {name} | {pause:g} | {quantiles(samples)} |")
    return rows


def service_rows(hits: int, pauses: list[float], work: Path) -> list[str]:
    work.mkdir()
    db_name = f"mgecache_gap_{os.getpid()}"
    run.admin_sql(f"CREATE DATABASE {db_name}")
    stack = run.Stack(work)
    try:
        redis_port, web_port = run.free_port(), run.free_port()
        run.start_redis(stack, redis_port)
        (work / "prometheus").mkdir()
        env = run.base_env(
            f"redis://127.0.0.1:{redis_port}/0",
            run.database_url(db_name),
            "",
            work / "prometheus",
            secrets.token_urlsafe(16),
        )
        key = run.start_servers(
            stack,
            env,
            [web_port],
            argparse.Namespace(
                split_nice=None, workers=run.WORKERS, threads=run.THREADS, celery_concurrency=run.CELERY_CONCURRENCY
            ),
        )
        run.warm(web_port, key)
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        masterplan = run.MASTERPLANS[0]

        def hit(n: int) -> float:
            prompt = f"load test prompt {n % run.HIT_PROMPTS} of {masterplan}"
            body = json.dumps({"prompt": prompt, "temperature": 0, "masterplan_id": masterplan}).encode()
            return post_once(web_port, "/api/v2/llm/generate", body, headers)

        return measure("service, cached hit", hit, hits, pauses)
    finally:
        stack.close()
        run.admin_sql(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")


def floor_rows(hits: int, pauses: list[float], work: Path) -> list[str]:
    work.mkdir()
    stack = run.Stack(work)
    try:
        port = start_floor(stack)
        body = b'{"prompt": "p", "temperature": 0}'
        headers = {"Content-Type": "application/json"}
        return measure("empty app", lambda n: post_once(port, "/", body, headers), hits, pauses)
    finally:
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hits", type=int, default=300, help="Hits per target and pause.")
    parser.add_argument("--pauses", default="0,20,100", help="Comma-separated pauses before each hit (ms).")
    args = parser.parse_args()
    pauses = [float(p) for p in args.pauses.split(",")]
    rows = ["| target | pause before each hit (ms) | p50 / p90 / p99 (ms) |", "| --- | ---: | ---: |"]
    with tempfile.TemporaryDirectory(prefix="mgecache-gap-") as tmp:
        rows += service_rows(args.hits, pauses, Path(tmp) / "service")
        rows += floor_rows(args.hits, pauses, Path(tmp) / "floor")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
