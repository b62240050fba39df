"""A cached answer end to end over HTTP: mgecache under gunicorn beside LiteLLM's proxy, in one run.

    .venv/bin/python benchmarks/http.py          # REDIS_URL (else redis://127.0.0.1:6379/12), DATABASE_URL

What runs, all on this machine:
  * a stub LLM provider (tests/stub_llm_server.py) that both servers point at; it answers
    the one priming request of each target (a request it sees while a target is measured is
    a miss, and is reported in the "misses" column);
  * mgecache: gunicorn with the project's gunicorn.conf.py, 2 workers (its default 8 threads
    each), on real Redis and PostgreSQL (a database of its own, migrated here), the Anthropic
    provider pointed at the stub. Throttles run with out-of-reach rates (http_settings.py);
  * LiteLLM's proxy (``litellm --num_workers 2``) with its Redis cache on the same Redis
    server, the OpenAI provider pointed at the same stub, from a benchmark-only venv
    (var/bench/peers/litellm, pins in benchmarks/peers/litellm.txt). Never a project dependency.

For each target (mgecache ``POST /api/v2/llm/generate``, mgecache ``POST /v1/chat/completions``,
LiteLLM ``POST /v1/chat/completions``) the same prompt is sent once to prime the cache, then
for ``--seconds`` by 1 client and by ``--clients`` concurrent clients (separate processes, one
keep-alive connection each): p50/p99 latency and throughput. Priming checks the cache's hit
marker; errors (non-200) and misses (requests at the stub) are counted. Prints a table, the
ratios, and one JSON line. Keys (both servers') are removed at the end; the processes stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if __name__ == "http":
    # Another script of this folder runs (the folder is first on its sys.path) and something
    # imports the standard library's http (Django does): this file must not stand in for it.
    # Load the real package under its name; the import system returns sys.modules["http"].
    import importlib.util
    import sysconfig

    _init = Path(sysconfig.get_path("stdlib")) / "http" / "__init__.py"
    _spec = importlib.util.spec_from_file_location("http", _init, submodule_search_locations=[str(_init.parent)])
    assert _spec is not None
    assert _spec.loader is not None
    _real = importlib.util.module_from_spec(_spec)
    sys.modules["http"] = _real
    _spec.loader.exec_module(_real)
else:
    # Run as a script: the same shadowing, for this script's own imports. Drop this folder.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlparse  # noqa: E402

MODEL = "claude-3-5-sonnet"
PROMPT = "Summarise the orderdesk service's payment retry policy in three sentences. " * 8
LOGS = ROOT / "var" / "bench" / "http"
START_SECONDS = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_env(redis_url: str, database_url: str, prefix: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "benchmarks.http_settings",
            "DJANGO_SECRET_KEY": "benchmark-only-not-a-secret",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "MGECACHE_IGNORE_DOTENV": "1",
            "MGECACHE_KEY_PREFIX": prefix,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def ensure_database(database_url: str) -> None:
    import psycopg

    parsed = urlparse(database_url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def make_api_key() -> str:
    from django.contrib.auth.models import Group, User

    from cache_app.models import PipelineAPIKey

    user, _ = User.objects.get_or_create(username="http-bench")
    user.groups.add(Group.objects.get(name="pipeline"))
    _, key = PipelineAPIKey.objects.create_key(name=f"http bench {uuid.uuid4().hex[:6]}", user=user)
    return key


class Server:
    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int, ready_path: str) -> None:
        LOGS.mkdir(parents=True, exist_ok=True)
        self.name, self.port, self.ready_path = name, port, ready_path
        self.log = (LOGS / f"{name}.log").open("w")
        self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", self.ready_path)
                if conn.getresponse().status < 500:
                    return
            except OSError:
                pass
            time.sleep(0.2)  # polling another process until it listens
        raise RuntimeError(f"{self.name} not ready after {START_SECONDS} s; see {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def start_mgecache(env: dict[str, str], stub_url: str) -> Server:
    port = free_port()
    env = {
        **env,
        "LLM_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "stub-key",
        "ANTHROPIC_BASE_URL": stub_url,
        "LLM_MAX_RETRIES": "0",
    }
    args = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", "2"]
    args += ["--bind", f"127.0.0.1:{port}", "mgecache_site.wsgi"]
    return Server("mgecache", args, env, port, "/healthz")


def start_litellm(redis_url: str, namespace: str, stub_openai_url: str, master_key: str) -> Server:
    from benchmarks.peers import venv

    python = venv.ensure("litellm")
    redis = urlparse(redis_url)
    config = LOGS / "litellm.yaml"
    LOGS.mkdir(parents=True, exist_ok=True)
    # JSON is YAML: no YAML library needed here.
    config.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": MODEL,
                        "litellm_params": {"model": f"openai/{MODEL}", "api_base": stub_openai_url, "api_key": "stub"},
                    }
                ],
                "litellm_settings": {
                    "cache": True,
                    "cache_params": {
                        "type": "redis",
                        "host": redis.hostname or "127.0.0.1",
                        "port": redis.port or 6379,
                        "db": int((redis.path or "/0").lstrip("/") or 0),
                        "namespace": namespace,
                    },
                },
                "general_settings": {"master_key": master_key},
            }
        )
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False", "LITELLM_LOG": "ERROR"})
    args = [str(python.parent / "litellm"), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    args += ["--num_workers", "2"]
    return Server("litellm", args, env, port, "/health/liveliness")


@dataclass(frozen=True)
class Target:
    name: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str]

    def request(self) -> tuple[int, dict[str, str], Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("POST", self.path, self.body, self.headers)
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(payload or b"null")


def is_hit(target: Target, headers: dict[str, str], body: Any) -> bool:
    if target.name == "mgecache /api/v2/llm/generate":
        return bool(body.get("cached"))
    if target.name.startswith("mgecache"):
        return headers.get("x-mgecache-cache", "").lower() == "hit"
    return bool(headers.get("x-litellm-cache-key"))


def drive(target: Target, seconds: float, start_at: float) -> tuple[list[float], int]:
    """One client: a keep-alive connection sending ``target``'s request until ``seconds`` pass."""
    conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
    latencies: list[float] = []
    errors = 0
    while time.time() < start_at:  # every client starts together
        time.sleep(0.001)
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        if t0 >= deadline:
            break
        try:
            conn.request("POST", target.path, target.body, target.headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", target.port, timeout=30)
            continue
        latencies.append(time.perf_counter() - t0)
    conn.close()
    return latencies, errors


def measure(target: Target, clients: int, seconds: float) -> dict[str, Any]:
    start_at = time.time() + 1.0
    with ProcessPoolExecutor(clients) as pool:
        runs = list(pool.map(drive, [target] * clients, [seconds] * clients, [start_at] * clients))
    latencies = sorted(x for run, _ in runs for x in run)
    errors = sum(e for _, e in runs)
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": len(latencies) / seconds,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1e3,
    }


def targets(mgecache_port: int, key: str, litellm_port: int | None, master_key: str) -> list[Target]:
    chat = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0}).encode()
    json_headers = {"Content-Type": "application/json"}
    out = [
        Target(
            "mgecache /api/v2/llm/generate",
            mgecache_port,
            "/api/v2/llm/generate",
            json.dumps({"prompt": PROMPT, "model": MODEL, "temperature": 0.0}).encode(),
            {**json_headers, "Authorization": f"Bearer {key}"},
        ),
        Target(
            "mgecache /v1/chat/completions",
            mgecache_port,
            "/v1/chat/completions",
            chat,
            {**json_headers, "Authorization": f"Bearer {key}"},
        ),
    ]
    if litellm_port is not None:
        out.append(
            Target(
                "litellm /v1/chat/completions",
                litellm_port,
                "/v1/chat/completions",
                chat,
                {**json_headers, "Authorization": f"Bearer {master_key}"},
            )
        )
    return out


def prime(target: Target) -> None:
    """One miss (the stub answers it), then a request that must be a hit."""
    status, headers, body = target.request()
    if status != 200:
        raise RuntimeError(f"{target.name}: priming answered {status}: {body}")
    for _ in range(50):  # a write may land just after the answer (LiteLLM caches asynchronously)
        status, headers, body = target.request()
        if status == 200 and is_hit(target, headers, body):
            return
        time.sleep(0.1)  # polling the other process until its write is visible
    raise RuntimeError(f"{target.name}: no cache hit after priming: {status} {headers} {body}")


def delete_prefix(redis_url: str, patterns: list[str]) -> int:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=60)
    removed = 0
    for pattern in patterns:
        batch = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(batch), 1000):
            removed += client.unlink(*batch[start : start + 1000])
    return removed


def print_table(results: list[dict[str, Any]]) -> None:
    header = f"{'target':<32} | {'clients':>7} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'errors':>6} | misses"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['target']:<32} | {r['clients']:>7} | {r['throughput_rps']:>8.0f} | {r['p50_ms']:>7.2f} | "
            f"{r['p99_ms']:>7.2f} | {r['errors']:>6} | {r['provider_calls']}"
        )


def ratios(results: list[dict[str, Any]]) -> dict[str, float]:
    by = {(r["target"], r["clients"]): r for r in results}
    out: dict[str, float] = {}
    for (name, clients), r in by.items():
        peer = by.get(("litellm /v1/chat/completions", clients))
        if peer is None or name.startswith("litellm"):
            continue
        short = "generate" if "generate" in name else "chat"
        out[f"{short}_throughput_vs_litellm_{clients}c"] = r["throughput_rps"] / peer["throughput_rps"]
        out[f"{short}_p50_litellm_over_mgecache_{clients}c"] = peer["p50_ms"] / r["p50_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the second measurement")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each measurement")
    parser.add_argument("--no-peers", action="store_true", help="skip LiteLLM (no venv is created)")
    args = parser.parse_args()

    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/12")
    database_url = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/mgecache_bench_http")
    prefix = f"mgecache-http-bench-{uuid.uuid4().hex[:10]}"
    namespace = f"litellm-http-bench-{uuid.uuid4().hex[:10]}"
    master_key = f"sk-bench-{uuid.uuid4().hex}"
    env = bench_env(redis_url, database_url, prefix)
    os.environ.update(env)
    ensure_database(database_url)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], env=env, cwd=ROOT, check=True)

    import django

    django.setup()
    from tests.stub_llm_server import StubLLMServer

    key = make_api_key()
    stub = StubLLMServer().start()
    servers: list[Server] = []
    results: list[dict[str, Any]] = []
    try:
        mgecache = start_mgecache(env, stub.url)
        servers.append(mgecache)
        litellm = None if args.no_peers else start_litellm(redis_url, namespace, stub.openai_base_url, master_key)
        if litellm is not None:
            servers.append(litellm)
        for server in servers:
            server.wait_ready()
        chosen = targets(mgecache.port, key, None if litellm is None else litellm.port, master_key)
        for target in chosen:
            prime(target)
        for clients in (1, args.clients):
            for target in chosen:  # interleaved: load on the shared machine hits every target alike
                before = len(stub.requests)
                result = {"target": target.name, **measure(target, clients, args.seconds)}
                # Every measured request should be a hit; one that reached the provider was not
                # (e.g. mgecache failing open on a Redis timeout when the machine is overloaded).
                result["provider_calls"] = len(stub.requests) - before
                results.append(result)
                print(f"  {target.name}, {clients} client(s): {result['throughput_rps']:.0f} req/s", flush=True)
    finally:
        for server in servers:
            server.stop()
        stub.stop()
        removed = delete_prefix(redis_url, [f"{prefix}:*", f"{namespace}*"])
        print(f"cleanup: servers stopped, {removed} keys unlinked")

    print()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"HTTP cached-hit benchmark: {args.seconds:.0f} s per measurement, redis={redis_url}, load average {load}")
    print_table(results)
    found = ratios(results)
    print()
    for name, value in found.items():
        print(f"{name:>40}: {value:.2f}x (target >= 1)")
    print(json.dumps({"results": results, "ratios": found, "prompt_chars": len(PROMPT)}))


if __name__ == "__main__":
    main()
