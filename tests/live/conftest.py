"""A live deployment for a test: gunicorn with 2 workers and a Celery worker, on the test's Redis and Postgres.

The processes share the test's database (``subprocess_env``; the test must be transactional so they
see its rows), its Redis key prefix, and a private Celery queue. The LLM provider is the Anthropic SDK
pointed at the test's stub server (``llm_stub_server``, answering batches in the batch format), so the
test counts exactly what the provider received, whichever process sent it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port

START_SECONDS = 60  # each process must be ready within this


class Process:
    """A child process whose merged output is drained by a thread; ``wait_for`` waits on a line, not a clock."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        threading.Thread(target=self._drain, name=f"drain-{name}", daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._file.write(line)
            self._file.flush()
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()
        with self._seen:
            self._seen.notify_all()

    def wait_for(self, text: str, count: int = 1, timeout: float = START_SECONDS) -> None:
        """Until ``count`` output lines contain ``text``; fails if the process exits or the timeout passes."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while sum(text in line for line in self.lines) < count:
                remaining = deadline - time.monotonic()
                if self.proc.poll() is not None or remaining <= 0:
                    tail = "".join(self.lines[-40:])
                    raise AssertionError(f"{self.name} not ready ({text!r} x{count}); output:\n{tail}")
                self._seen.wait(min(remaining, 1.0))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._file.close()


class LiveStack:
    """gunicorn (2 sync workers) and a Celery worker (2 threads) serving the API at ``url``."""

    def __init__(self, env: dict[str, str], key: str, logs: Path) -> None:
        self.env = env
        self.key = key
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[Process] = []

    def start(self) -> LiveStack:
        queue = self.env["MGECACHE_TEST_QUEUE"]
        gunicorn = ["-c", "gunicorn.conf.py", "--workers", "2", "--threads", "1", "--timeout", "120"]
        web = Process(
            "gunicorn",
            [sys.executable, "-m", "gunicorn", *gunicorn, "--bind", f"127.0.0.1:{self.port}", "mgecache_site.wsgi"],
            self.env,
            self.logs / "gunicorn.log",
        )
        self.processes.append(web)
        celery = ["--pool", "threads", "--concurrency", "2", "-Q", queue, "-n", f"{queue}@%h", "--loglevel", "INFO"]
        worker = Process(
            "celery",
            [sys.executable, "-m", "celery", "-A", "mgecache_site", "worker", *celery, "--without-gossip"],
            self.env,
            self.logs / "celery.log",
        )
        self.processes.append(worker)
        web.wait_for("Booting worker", count=2)  # the socket is bound before: requests queue until served
        worker.wait_for(" ready.")
        return self

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    # --- a client -------------------------------------------------------------------------------

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body) of one request with the stack's API key."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status, dict(response.headers), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read() or b"null")

    def from_every_worker(self, path: str, rounds: int = 20, burst: int = 6) -> dict[str, Any]:
        """``GET path`` answered by each web worker: {pid: body}. Concurrent bursts reach both sync workers."""
        answers: dict[str, Any] = {}
        with ThreadPoolExecutor(burst) as pool:
            for _ in range(rounds):
                for status, headers, body in pool.map(lambda _: self.call("GET", path), range(burst)):
                    assert status == 200, (status, body)
                    answers.setdefault(headers["X-Served-By"], body)
                if len(answers) == 2:
                    break
        return answers

    def until(self, probe: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 60) -> Any:
        """Ask ``probe`` until ``done`` says so. Work on the Celery worker ends when it ends: a client polls."""
        deadline = time.monotonic() + timeout
        interval = 0.02
        while True:
            value = probe()
            if done(value) or time.monotonic() > deadline:
                return value
            time.sleep(interval)  # polling another process for an outcome, not timing a window
            interval = min(interval * 2, 0.5)


@pytest.fixture
def live_stack(subprocess_env, make_caller, seeded_defaults, llm_stub_server, tmp_path):
    """A started :class:`LiveStack` with an admin key; stopped (and its processes gone) at teardown."""
    llm_stub_server.answer_batches = True
    queue = f"mgecache-live-{uuid.uuid4().hex[:12]}"
    prometheus = tmp_path / "prometheus"
    prometheus.mkdir()
    env = {
        **subprocess_env,
        "DJANGO_SETTINGS_MODULE": "tests.live.settings",
        "MGECACHE_TEST_QUEUE": queue,
        "LLM_PROVIDER": "anthropic",
        "ANTHROPIC_API_KEY": "stub-key",
        "ANTHROPIC_BASE_URL": llm_stub_server.url,
        "LLM_MAX_RETRIES": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(prometheus),
    }
    stack = LiveStack(env, make_caller("admin").key, tmp_path)
    try:
        yield stack.start()
    finally:
        stack.stop()
