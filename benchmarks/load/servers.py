"""A lone cached hit's CPU in the HTTP server: gunicorn (the project's) against granian, alternating.

    .venv/bin/python benchmarks/load/servers.py --hits 2000 --rounds 3

How much of a hit's cost would another HTTP server save? One worker process of each serves the same
app (gunicorn: ``gunicorn.conf.py``, 8 threads; granian 2.8.7, a Rust server, WSGI, 8 blocking threads)
on the same private redis-server and Postgres database (set up as ``run.py`` does), one hit at a time,
each on a fresh connection (no keep-alive, as the project's gunicorn). Prints per round the server's CPU
per hit (every process of the server, from /proc) and the latency p50 / p99 seen by the client, then
the ratio of the two servers' median CPU per hit. granian is a peer measured here, not a dependency: it
is installed into the bench-only ``var/servers-venv`` (``requirements-servers.txt``) and imports the
project and its packages from ``.venv``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.load import run  # noqa: E402
from benchmarks.load.cpu import process_seconds, tree  # noqa: E402
from benchmarks.load.idle_gap import post_once  # noqa: E402

VENV = ROOT / "var" / "servers-venv"
APP = "mgecache_site.wsgi:application"
WARM_HITS = 300


def ensure_granian() -> Path:
    granian = VENV / "bin" / "granian"
    if not granian.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        requirements = HERE / "requirements-servers.txt"
        subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "-r", str(requirements)], check=True)
    return granian


def commands(port: int, granian: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    """Each server's command line and the environment it adds."""
    gunicorn = [run.PY, "-m", "gunicorn", "-c", "gunicorn.conf.py", APP, "--access-logfile", "/dev/null"]
    rust = [str(granian), "--interface", "wsgi", "--workers", "1", "--blocking-threads", "8"]
    rust += ["--host", "127.0.0.1", "--port", str(port), "--no-ws", APP]
    site = sysconfig.get_paths()["purelib"]  # .venv's packages, for the app that granian's interpreter imports
    return {
        "gunicorn": (gunicorn, {"GUNICORN_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "8"}),
        "granian": (rust, {"PYTHONPATH": f"{ROOT}{os.pathsep}{site}"}),
    }


def measure(server: subprocess.Popen, port: int, hits: int, body: bytes, headers: dict[str, str]) -> dict[str, float]:
    """The server's CPU ms per hit and the client's p50 / p99 (ms) over ``hits`` hits, after a warm-up."""
    hit = functools.partial(post_once, port, "/api/v2/llm/generate", body, headers)  # ms, on a fresh connection
    run.wait_until(hit, "the server's first hit", 120)
    for _ in range(WARM_HITS):
        hit()
    pids = tree(server.pid)
    before = sum(process_seconds(pid) for pid in pids)
    latencies = sorted(hit() for _ in range(hits))
    spent = sum(process_seconds(pid) for pid in pids) - before
    return {
        "cpu_ms": 1000 * spent / hits,
        "p50_ms": latencies[hits // 2],
        "p99_ms": latencies[min(hits - 1, int(hits * 0.99))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hits", type=int, default=2000, help="Hits measured per server and round.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds; each runs gunicorn, then granian.")
    args = parser.parse_args()
    granian = ensure_granian()
    db_name = f"mgecache_servers_{os.getpid()}"
    run.admin_sql(f"CREATE DATABASE {db_name}")
    rows, cpu = [], {"gunicorn": [], "granian": []}
    with tempfile.TemporaryDirectory(prefix="mgecache-servers-") as tmp:
        work = Path(tmp)
        (work / "prometheus").mkdir()
        stack = run.Stack(work)
        try:
            redis_port, port = run.free_port(), run.free_port()
            run.start_redis(stack, redis_port)
            env = run.base_env(
                f"redis://127.0.0.1:{redis_port}/0",
                run.database_url(db_name),
                "",
                work / "prometheus",
                secrets.token_urlsafe(16),
            )
            setup = subprocess.run([run.PY, "-c", run.SETUP], env=env, cwd=ROOT, capture_output=True, text=True)
            if setup.returncode != 0:
                raise RuntimeError(setup.stderr[-3000:])
            key = setup.stdout.strip().splitlines()[-1]
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            body = json.dumps({"prompt": "a lone hit", "temperature": 0, "masterplan_id": run.MASTERPLANS[0]}).encode()
            for round_no in range(1, args.rounds + 1):
                for name, (command, extra) in commands(port, granian).items():
                    server = stack.spawn(f"{name}-{round_no}", command, {**env, **extra})
                    try:
                        figures = measure(server, port, args.hits, body, headers)
                    finally:
                        server.terminate()
                        server.wait(30)
                    cpu[name].append(figures["cpu_ms"])
                    rows.append(
                        f"| {round_no} | {name} | {figures['cpu_ms']:.2f} "
                        f"| {figures['p50_ms']:.2f} / {figures['p99_ms']:.2f} |"
                    )
        finally:
            stack.close()
            run.admin_sql(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
    print("| round | server | server CPU per hit (ms) | client p50 / p99 (ms) |")
    print("| ---: | --- | ---: | ---: |")
    print("\n".join(rows))
    ratio = statistics.median(cpu["granian"]) / statistics.median(cpu["gunicorn"])
    print(f"\ngranian / gunicorn, median CPU per hit: {ratio:.2f} ({args.hits} hits per server and round)")


if __name__ == "__main__":
    main()
