"""The load test's floor: an empty WSGI app behind the same gunicorn settings and the same locust.

    .venv/bin/python benchmarks/load/floor.py --users 1,2,4,8 --duration 20

What this machine gives *any* Python web app under ``make load``'s setup: its gunicorn workers and
threads, no keep-alive, as many connections per worker as threads, an access log, and locust on
the same cores. The app answers every request at once with a fixed JSON body, so the figures are the
HTTP server's and the load generator's cost alone; compare them with the ``hits only`` rows of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from benchmarks.load.cpu import busy_share, cpu_ticks  # noqa: E402
from benchmarks.load.run import (  # noqa: E402
    THREADS,
    WORKERS,
    Stack,
    ensure_locust,
    free_port,
    read_stats,
    wait_until,
)

BODY = b'{"text": "cached", "cached": true}'


def application(environ, start_response):  # type: ignore[no-untyped-def]
    environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


LOCUSTFILE = """
from locust import FastHttpUser, constant, task

class Hits(FastHttpUser):
    wait_time = constant(0)

    @task
    def hit(self):
        self.client.post("/api/v2/llm/generate", json={"prompt": "p", "temperature": 0}, name="llm hit")
"""


def gunicorn_config(port: int) -> str:
    """The service's gunicorn settings under ``make load`` (gunicorn.conf.py's defaults, run.py's workers)."""
    settings = {
        "workers": WORKERS,
        "threads": THREADS,
        "keepalive": 0,
        "worker_connections": THREADS,
        "accesslog": '"-"',
    }
    return f'bind = "127.0.0.1:{port}"\n' + "".join(f"{name} = {value}\n" for name, value in settings.items())


def start_floor(stack: Stack) -> int:
    """The empty app behind the service's gunicorn settings, on a free port; ``stack.close()`` ends it."""
    port = free_port()
    config = stack.work / "floor-gunicorn.conf.py"
    config.write_text(gunicorn_config(port))
    command = [sys.executable, "-m", "gunicorn", "-c", str(config), "benchmarks.load.floor:application"]
    stack.spawn("floor", command, dict(os.environ))
    wait_until(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200, "gunicorn")
    return port


def run(users: int, duration: int, locust: Path, work: Path) -> str:
    stack = Stack(work)
    try:
        port = start_floor(stack)
        before = cpu_ticks()
        out = subprocess.run(
            [str(locust), "-f", str(work / "locustfile.py"), "--headless", "-u", str(users), "-r", str(users),
             "-t", f"{duration}s", "--host", f"http://127.0.0.1:{port}", "--only-summary"],
            capture_output=True, check=False, timeout=duration + 60,
        )  # fmt: skip
        after = cpu_ticks()
    finally:
        stack.close()
    row = read_stats((out.stdout + out.stderr).decode())["llm hit"]
    cpu = busy_share(before, after)
    return (
        f"| empty app, {users} users | {cpu:.0f} % | {row['rps']:.0f} | {row['p50_ms']:.0f} / {row['p99_ms']:.0f} "
        f"| {row['failures']:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="1,2,4,8", help="Comma-separated locust user counts.")
    parser.add_argument("--duration", type=int, default=20, help="Seconds per run.")
    args = parser.parse_args()
    locust = ensure_locust()
    rows = ["| case | CPU busy | req/s | p50 / p99 (ms) | errors |", "| --- | ---: | ---: | ---: | ---: |"]
    with tempfile.TemporaryDirectory(prefix="mgecache-floor-") as tmp:
        work = Path(tmp)
        (work / "locustfile.py").write_text(LOCUSTFILE)
        for users in args.users.split(","):
            rows.append(run(int(users), args.duration, locust, work))
            time.sleep(1)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
