"""Scale-out load test: 4 gunicorn workers + 2 Celery workers under locust, on one Redis, a Cluster, a failover.

    make load                      # single Redis, Cluster, failover (24 users), failover at 32 users; 60 s each
    .venv/bin/python benchmarks/load/run.py --cases single@8,single@16,single@24,single@32  # a sweep
    .venv/bin/python benchmarks/load/run.py --cases single@4 --mix 100,0,0,0              # hits only
    .venv/bin/python benchmarks/load/run.py --cases single@knee,cluster@knee              # at this machine's knee
    .venv/bin/python benchmarks/load/run.py --cases single@busy85,cluster@busy85          # the knee's users, 85 % busy
    .venv/bin/python benchmarks/load/run.py --cases single@24 --split-nice 10 --locust-nice=-10  # experiments
    taskset -c 0 .venv/bin/python benchmarks/load/run.py --cases single@knee --locust-cpus 1   # one core; locust apart

``--rate R`` offers R requests/s in all (open loop, spread over the users) instead of each user sending
its next request when the last returns: the latency at a given offered load, as service targets state it.

``--locust-nice`` runs the load generator at another priority (negative needs root): it shares the
cores and times each response only when it next runs. ``--split-nice`` serves hits on half the web
workers and everything else on the other half at that nice value, locust routing by kind: an upper
bound for serving hits apart (docs/benchmarks.md, "Two experiments").
``--locust-cpus`` pins locust to CPUs of its own; with the runner (and so every server) under
``taskset``, the busy share and the knee are of the servers' CPUs (docs/benchmarks.md, "The load
generator on a core of its own").

Every process is private and removed afterwards: a redis-server for Django's cache, throttles and
the broker (and the caches in the ``single`` case), a 3+3 Redis Cluster for the caches in the
``cluster`` and ``failover`` cases (tests/cluster/conftest.py starts it), a Postgres database of its
own (``mgecache_load_<pid>`` on DATABASE_URL's server), the web and Celery workers, and locust in a
bench-only virtualenv (var/load-venv, from benchmarks/load/requirements-locust.txt).

Reports per case (the tables: report.py): requests/s, p50/p99 per kind (locust), errors (non-2xx), and from ``/metrics``
(aggregated over the web workers through PROMETHEUS_MULTIPROC_DIR): the API requests the servers
counted (must equal what locust sent), fail-open cache calls and Redis outages with their seconds;
and the share of the CPU time that was busy during the run (/proc/stat, every process; of the CPUs
the run may use, so ``taskset -c 0 .venv/bin/python benchmarks/load/run.py ...`` measures a 1-core host).
A second table splits the CPU seconds by role (each process with its children, /proc/<pid>/stat;
locust from its rusage) and counts read timeouts that the breaker's ping found Redis answering.
In the ``failover`` case a Cluster primary is SIGKILLed a third into the run. ``<case>@knee`` first
probes 2, 4, 6, 8, 10, 12, 16, ... users for 12 s each and runs the case at the fewest that keep the cores
90 % busy, the load that saturates the cores, which moves with the machine's speed. Before its load, each case
measures a baseline on the same servers: one user asking hits one at a time for 15 s. A third table
gives the hit p99 under load as a multiple of that lone p99, a figure that carries between machines.
``<case>@busy<P>`` finds the knee's users, then paces them (each on a schedule of rate/users requests/s,
probes of 20 s, interpolating the busy share against requests/s) until the cores are P % busy within
2.5 points, and runs the case there: the tail at a held busy share, which the knee's coarse steps miss.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.load.cpu import CpuMeter, busy_share, cpu_ticks  # noqa: E402
from benchmarks.load.report import (  # noqa: E402
    baseline_report,
    cpu_report,
    knee_report,
    parse_metrics,
    read_stats,
    report,
)
from benchmarks.load.search import find_knee, find_rate  # noqa: E402

VENV = ROOT / "var" / "load-venv"
PY = sys.executable
MASTERPLANS = [str(uuid.UUID(int=n * 7919 + 1)) for n in range(8)]
HIT_PROMPTS = 50
# The servers' shape (docs/benchmarks.md, "Scale-out load test", says why): 4 web workers x 8 threads, so
# that the misses and waiting waves in flight leave threads for hits and the cores can saturate; 2 Celery
# workers of 4 processes, so that waves (which a waiting web thread follows) do not queue behind each other.
WORKERS, THREADS, CELERY_CONCURRENCY, USERS = 4, 8, 4, 24
# The baseline each case measures first: a lone user's hits, one at a time (the hit p99's denominator).
BASELINE_SECONDS = 15
# How long each probe of ``@knee`` and ``@busy<P>`` runs (the search itself: search.py).
KNEE_SECONDS = 12
# Longer than a knee probe: a 6 s CPU window moved by up to 20 points between probes at one rate.
PACE_SECONDS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition, what: str, deadline: float = 60.0):  # type: ignore[no-untyped-def]
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            value = condition()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


class Stack:
    """The processes of one case; ``close`` ends them all."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen] = []
        self.names: list[str] = []

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "wb")  # noqa: SIM115  # closed with the process
        proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        self.names.append(name)
        return proc

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def ensure_locust() -> Path:
    locust = VENV / "bin" / "locust"
    if not locust.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        requirements = ROOT / "benchmarks" / "load" / "requirements-locust.txt"
        subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "-r", str(requirements)], check=True)
    return locust


def database_url(name: str) -> str:
    base = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    return urlunsplit((base.scheme, base.netloc, f"/{name}", "", ""))


def admin_sql(sql: str) -> None:
    import psycopg

    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        conn.execute(sql)


def base_env(redis_url: str, db_url: str, cluster_nodes: str, multiproc: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "MGECACHE_", "CELERY_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="benchmarks.load.settings",
        MGECACHE_IGNORE_DOTENV="1",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        REDIS_URL=redis_url,
        DATABASE_URL=db_url,
        METRICS_TOKEN=token,
        PROMETHEUS_MULTIPROC_DIR=str(multiproc),
        PYTHONPATH=str(ROOT),
        MGECACHE_KEY_PREFIX=f"mgecache-load-{uuid.uuid4().hex[:8]}",
    )
    if cluster_nodes:
        env["REDIS_CLUSTER_NODES"] = cluster_nodes
    return env


SETUP = """
import django; django.setup()
from django.contrib.auth.models import Group, User
from django.core.management import call_command
import io
call_command("migrate", verbosity=0)
user, _ = User.objects.get_or_create(username="load-bot")
user.groups.add(Group.objects.get(name="pipeline"))
out = io.StringIO()
call_command("create_api_key", user="load-bot", stdout=out, stderr=io.StringIO())
print(out.getvalue().strip().splitlines()[-1])
"""


def scrape(port: int, token: str) -> dict[str, float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    return parse_metrics(urllib.request.urlopen(request, timeout=10).read().decode())


def post(port: int, key: str, path: str, body: dict) -> int:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def warm(port: int, key: str) -> None:
    """Store the prompts the hit traffic asks (through the API, like any client)."""
    bodies = [
        {"prompt": f"load test prompt {n} of {mp}", "temperature": 0, "masterplan_id": mp}
        for mp in MASTERPLANS
        for n in range(HIT_PROMPTS)
    ]
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda b: post(port, key, "/api/v2/llm/generate", b), bodies, timeout=300))
    if set(codes) != {200}:
        raise RuntimeError(f"warm-up answered {sorted(set(codes))}")


def start_redis(stack: Stack, port: int) -> None:
    stack.spawn(
        f"redis-{port}",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        dict(os.environ),
    )
    import redis

    wait_until(lambda: redis.Redis(port=port).ping(), f"redis-server on {port}")


def start_servers(stack: Stack, env: dict[str, str], ports: list[int], args: argparse.Namespace) -> str:
    """Celery and the web workers on ``ports[0]`` (with ``--split-nice``: hits there, the rest on ``ports[1]``)."""
    setup = subprocess.run([PY, "-c", SETUP], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    if setup.returncode != 0:
        raise RuntimeError(setup.stderr[-3000:])
    key = setup.stdout.strip().splitlines()[-1]
    for n in (1, 2):
        stack.spawn(
            f"celery-{n}",
            [
                PY,
                "-m",
                "celery",
                "-A",
                "mgecache_site",
                "worker",
                "-c",
                str(args.celery_concurrency),
                "-n",
                f"load{n}@%h",
                "-l",
                "warning",
            ],
            {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"},  # scraped by nobody here
        )
    if args.split_nice is None:
        start_web(stack, env, ports[0], args.workers, args.threads)
        return key
    # The experiment: hits on a pool of their own, everything else on another at a lower priority.
    hits = max(1, args.workers // 2)
    start_web(stack, env, ports[0], hits, args.threads)
    multiproc = Path(env["PROMETHEUS_MULTIPROC_DIR"] + "-rest")
    multiproc.mkdir()
    rest_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    start_web(stack, rest_env, ports[1], max(1, args.workers - hits), args.threads, nice=args.split_nice)
    return key


def pinned(cpus: str, command: list[str]) -> list[str]:
    """``command`` on the CPUs ``cpus`` (taskset's list, e.g. ``1``; empty: wherever the runner may run)."""
    return ["taskset", "-c", cpus, *command] if cpus else command


def niced(value: int, command: list[str]) -> list[str]:
    """``command`` at nice ``value`` (0: as it is)."""
    return ["nice", "-n", str(value), *command] if value else command


def start_web(stack: Stack, env: dict[str, str], port: int, workers: int, threads: int, nice: int = 0) -> None:
    command = [PY, "-m", "gunicorn", "-c", "gunicorn.conf.py", "mgecache_site.wsgi:application"]
    stack.spawn(
        "gunicorn",
        niced(nice, command),
        {
            **env,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
        },
    )
    health = f"http://127.0.0.1:{port}/healthz"
    wait_until(lambda: urllib.request.urlopen(health, timeout=2).status == 200, "the web workers", 120)


def scrape_all(ports: list[int], token: str) -> dict[str, float]:
    """``scrape`` summed over the web pools (one, or two with ``--split-nice``)."""
    totals: dict[str, float] = {}
    for port in ports:
        for name, value in scrape(port, token).items():
            totals[name] = totals.get(name, 0.0) + value
    return totals


def kill_a_primary(cluster, delay: float, record: dict) -> None:  # type: ignore[no-untyped-def]
    time.sleep(delay)  # the load generator runs meanwhile: this is the moment of the failure
    primary = cluster.primaries()[0]
    replica = cluster.replica_of(primary)
    record["killed_at"] = time.monotonic()
    cluster.kill(primary)
    wait_until(lambda: replica in cluster.primaries(), "the replica's promotion", 60)
    record["promoted_after_s"] = round(time.monotonic() - record["killed_at"], 2)


def run_locust(
    locust: Path,
    args: argparse.Namespace,
    key: str,
    ports: list[int],
    *,
    users: str,
    mix: str,
    seconds: int,
    rate: float | None = None,
) -> str:
    """One headless locust run against the servers; its printed summary (``read_stats`` parses it).

    ``rate``: requests/s offered in all (None: ``--rate``; 0: closed loop).
    """
    rate = args.rate if rate is None else rate
    generator = subprocess.run(
        pinned(args.locust_cpus, niced(args.locust_nice, [
            str(locust), "-f", str(ROOT / "benchmarks" / "load" / "locustfile.py"), "--headless",
            "-u", users, "-r", users, "-t", f"{seconds}s", "--stop-timeout", "20",
            "--host", f"http://127.0.0.1:{ports[0]}", "--only-summary",
        ])),
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),  # the locustfile's pacing: benchmarks.load.pacing
            "LOAD_API_KEY": key,
            "LOAD_MASTERPLANS": ",".join(MASTERPLANS),
            "LOAD_HIT_PROMPTS": str(HIT_PROMPTS),
            "LOAD_MIX": mix,
            "LOAD_REST_HOST": f"http://127.0.0.1:{ports[-1]}",
            "LOAD_USER_RATE": str(rate / int(users)) if rate and users != "1" else "0",
        },
        cwd=ROOT,
        check=False,
        capture_output=True,
        timeout=seconds + 120,
    )  # fmt: skip
    return (generator.stdout + generator.stderr).decode()


def busy_between(start: float, end: float) -> float:
    """The busy share (%) of the CPUs the run may use from ``start`` to ``end`` s from now."""
    time.sleep(start)
    first = cpu_ticks()
    time.sleep(end - start)
    return busy_share(first, cpu_ticks())


def knee_probe(
    locust: Path,
    args: argparse.Namespace,
    key: str,
    ports: list[int],
    users: int,
    rate: float | None = None,
    seconds: int = KNEE_SECONDS,
) -> tuple[float, float]:
    """(CPU busy %, requests/s) of the load at ``users`` (``rate``: as ``run_locust``) for ``seconds``.

    The CPU window leaves out locust's start-up (1-3 s of imports) and its last two seconds.
    """
    with ThreadPoolExecutor(1) as pool:
        share = pool.submit(busy_between, 4.0, seconds - 2.0)
        out = run_locust(locust, args, key, ports, users=str(users), mix=args.mix, seconds=seconds, rate=rate)
        return share.result(), read_stats(out)["Aggregated"]["rps"]


def run_case(label: str, args: argparse.Namespace, db_url: str, locust: Path) -> dict:
    """``label``: single, cluster or failover; then ``@<users>`` (default ``--users``), ``@knee`` or ``@busy<P>``."""
    case, _, users = label.partition("@")
    users = users or str(args.users)
    work = Path(tempfile.mkdtemp(prefix=f"mgecache-load-{case}-"))
    multiproc = work / "prometheus"
    multiproc.mkdir()
    stack, cluster = Stack(work), None
    token = secrets.token_urlsafe(16)
    try:
        redis_port, web_port = free_port(), free_port()
        ports = [web_port] if args.split_nice is None else [web_port, free_port()]
        start_redis(stack, redis_port)
        nodes = ""
        if case in ("cluster", "failover"):
            from tests.cluster.conftest import start_cluster

            (work / "cluster").mkdir()
            cluster = start_cluster(work / "cluster")
            nodes = ",".join(cluster.seeds)
        env = base_env(f"redis://127.0.0.1:{redis_port}/0", db_url, nodes, multiproc, token)
        key = start_servers(stack, env, ports, args)
        warm(web_port, key)
        knee: list[dict[str, float]] = []
        pace: list[dict[str, float]] = []
        mode, rate, target = users, None, 0.0
        if mode == "knee" or mode.startswith("busy"):
            found, knee = find_knee(functools.partial(knee_probe, locust, args, key, ports))
            users = str(found)
        if mode.startswith("busy"):  # the knee's users, paced to P % busy
            target = float(mode.removeprefix("busy"))
            paced = functools.partial(knee_probe, locust, args, key, ports, found, seconds=PACE_SECONDS)
            rate, pace = find_rate(lambda r: paced(rate=r), target, knee)
        # The same-run baseline: one user asking hits one at a time, on these servers, before the load.
        lone = run_locust(locust, args, key, ports, users="1", mix="100,0,0,0", seconds=BASELINE_SECONDS)
        baseline = read_stats(lone).get("llm hit", {})
        before = scrape_all(ports, token)
        failure: dict = {}
        if case == "failover":
            threading.Thread(target=kill_a_primary, args=(cluster, args.duration / 3, failure), daemon=True).start()
        meter = CpuMeter(stack, cluster)
        meter.start()
        output = run_locust(locust, args, key, ports, users=users, mix=args.mix, seconds=args.duration, rate=rate)
        cpu, roles = meter.stop()  # includes locust's 20 s stop timeout at most
        (ROOT / "var" / f"load-locust-{case}-{users}.log").write_text(output)
        after = scrape_all(ports, token)
        stats = read_stats(output)
        counted = {name: after[name] - before.get(name, 0.0) for name in after}
        return {
            "case": f"{case}, {users} users"
            + (f" at {rate:g}/s (paced to {target:g} % busy)" if pace else "")
            + (" (the knee)" if knee and not pace else ""),
            "stats": stats,
            "baseline": baseline,
            "knee": knee,
            "pace": pace,
            "server": counted,
            "failure": failure,
            "cpu": cpu,
            "roles": roles,
        }
    finally:
        stack.close()
        if cluster is not None:
            cluster.stop()
        logs = ROOT / "var" / f"load-logs-{case}-{users}"  # the servers' logs, for a look after a failure
        shutil.rmtree(logs, ignore_errors=True)
        shutil.copytree(work, logs, ignore=shutil.ignore_patterns("prometheus", "*.rdb", "nodes-*.conf"))
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--cases", default="single,cluster,failover,failover@32", help="Comma-separated; name@N runs N users."
    )
    parser.add_argument("--duration", type=int, default=60, help="Seconds of load per case.")
    # 24: the knee on 2 cores with the servers below (about 85-90 % busy; more users add queueing, not throughput),
    # on a machine whose web workers spend ~1.8 ms per request; at ~9 ms (5x slower) it is 8 (docs/benchmarks.md).
    parser.add_argument(
        "--users", type=int, default=USERS, help="Concurrent locust users (closed loop, no think time, unless --rate)."
    )
    parser.add_argument("--mix", default="70,20,10,1", help="Task weights: LLM hits, misses, RAG queries, waves.")
    parser.add_argument("--workers", type=int, default=WORKERS, help="gunicorn worker processes.")
    parser.add_argument("--threads", type=int, default=THREADS, help="Threads per gunicorn worker.")
    parser.add_argument(
        "--celery-concurrency", type=int, default=CELERY_CONCURRENCY, help="Processes per Celery worker."
    )
    parser.add_argument("--locust-nice", type=int, default=0, help="Run locust at this nice value (negative: root).")
    parser.add_argument(
        "--locust-cpus",
        default="",
        help="Experiment: run locust on these CPUs (taskset list), e.g. the runner under taskset -c 0 and locust on 1.",
    )
    parser.add_argument(
        "--split-nice",
        type=int,
        default=None,
        help="Experiment: hits on half the web workers, misses, RAG and waves on the other half at this nice value.",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="Open loop: offer this many requests/s in all, spread over the users (0: closed loop, no think time).",
    )
    args = parser.parse_args()
    locust = ensure_locust()
    db_name = f"mgecache_load_{os.getpid()}"
    admin_sql(f"CREATE DATABASE {db_name}")
    results = []
    out = ROOT / "var" / "load-results.json"
    try:
        for case in args.cases.split(","):
            try:
                results.append(run_case(case, args, database_url(db_name), locust))
            except Exception as exc:  # report the others; the logs are in var/load-logs-*
                print(f"{case}: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            out.write_text(json.dumps(results, indent=2))
            print(f"{case}: done", file=sys.stderr)
    finally:
        admin_sql(f"DROP DATABASE IF EXISTS {db_name} WITH (FORCE)")
    print(report(results))
    print()
    print(cpu_report(results))
    print()
    print(baseline_report(results))
    knees = knee_report(results, KNEE_SECONDS)
    if knees:
        print(f"\n{knees}")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"\n(raw figures: {out.relative_to(ROOT)}; {os.cpu_count()} CPUs; {stamp})")


if __name__ == "__main__":
    main()
