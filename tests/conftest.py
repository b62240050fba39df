"""Shared fixtures.

Real services: with REDIS_URL / DATABASE_URL set (as .ci/run does) the tests use those
servers; without them the embedded defaults (fakeredis, SQLite) are used and tests
marked ``redis_server`` / ``postgres`` are skipped with a reason. With CI=true a
missing service fails those tests instead of skipping them.

Isolation: every test gets its own Redis key prefix (MGECACHE['KEY_PREFIX']) and its
keys are deleted with SCAN + UNLINK afterwards; nothing is ever FLUSHed. pytest-django's
test database name carries this process's pid so that concurrent runs do not collide.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from cache_app import masterplans
from cache_app.core import counters as counters_module
from cache_app.core import keys, policies, redis_client
from cache_app.llm import client as llm_client
from cache_app.rag import engine as rag_engine

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
HAS_REAL_REDIS = bool(os.environ.get("REDIS_URL"))
HAS_POSTGRES = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://", "pgsql://"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, available, what in (
        ("redis_server", HAS_REAL_REDIS, "a real Redis (set REDIS_URL)"),
        ("postgres", HAS_POSTGRES, "a real PostgreSQL (set DATABASE_URL)"),
    ):
        if item.get_closest_marker(marker) and not available:
            if IN_CI:
                pytest.fail(f"CI=true but this test needs {what}")
            pytest.skip(f"needs {what}")


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    # Concurrent test runs on one Postgres must not share a test database.
    test = settings.DATABASES["default"].setdefault("TEST", {})
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        return
    base = test.get("NAME") or f"test_{settings.DATABASES['default']['NAME']}"
    test["NAME"] = f"{base}_{os.getpid()}"


@pytest.fixture(autouse=True)
def _isolated_mgecache(settings) -> str:
    """A unique key prefix per test, fresh process-wide singletons, eager Celery."""
    from mgecache_site.celery import app as celery_app

    prefix = f"mgecache-test-{uuid.uuid4().hex[:12]}"
    # Tests do not run collectstatic: serve static names without the hashed manifest.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.MGECACHE = {**settings.MGECACHE, "KEY_PREFIX": prefix}
    policies._default_source = None
    redis_client._default_breaker = None
    counters_module._default = None
    llm_client._default_client = None
    rag_engine._default_engine = None
    masterplans._default = None
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield prefix
    celery_app.conf.task_always_eager = eager
    _delete_prefix(prefix)


def _delete_prefix(prefix: str) -> None:
    try:
        client = redis_client.get_redis()
        batch = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    except Exception:  # a test that stopped Redis on purpose must not fail teardown
        pass


@pytest.fixture
def redis(_isolated_mgecache):
    """The configured Redis client (real in CI, embedded otherwise), with a private key prefix."""
    return redis_client.get_redis()


@pytest.fixture
def key_prefix(_isolated_mgecache) -> str:
    return keys.prefix()


@pytest.fixture
def policy_source() -> policies.PolicySource:
    """A PolicySource that always re-reads the database (no refresh delay)."""
    return policies.PolicySource(refresh_seconds=0)


class FakeClock:
    """An injectable monotonic clock: tests advance it instead of sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of the test's own on a free port, which the test may stop and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # Wait for the server's own readiness line rather than polling the port.
        for line in self.proc.stdout:
            if "Ready to accept connections" in line:
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # keep draining
                return
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis():
    """A private redis-server (started), stopped at teardown. Needs the redis-server binary."""
    if not shutil.which("redis-server"):
        if IN_CI:
            pytest.fail("CI=true but redis-server is not installed")
        pytest.skip("needs the redis-server binary")
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def blackhole_port():
    """A port that accepts TCP connections but never answers (a hung Redis)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
def subprocess_env(_isolated_mgecache, settings) -> dict[str, str]:
    """Environment for a child Python process that must share this test's Redis prefix and database."""
    env = dict(os.environ)
    env["MGECACHE_KEY_PREFIX"] = _isolated_mgecache
    env["MGECACHE_IGNORE_DOTENV"] = "1"
    env["DJANGO_SETTINGS_MODULE"] = "mgecache_site.settings"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("postgresql"):
        from django.db import connection

        env["DATABASE_URL"] = (
            f"postgres://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}"
            f"/{connection.settings_dict['NAME']}"
        )
    return env


def run_python(code: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with Django set up; raises if it fails."""
    prelude = "import django; django.setup()\n"
    proc = subprocess.run(
        [sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def celery_worker():
    """A real Celery worker (in a thread of this process) consuming a private queue on the Redis broker.

    Yields the queue name; send tasks with ``task.apply_async(..., queue=queue)``.
    Needs a real broker (REDIS_URL set), like the ``redis_server`` marker.
    """
    if not HAS_REAL_REDIS:
        if IN_CI:
            pytest.fail("CI=true but the Celery worker test needs a real Redis broker (REDIS_URL)")
        pytest.skip("needs a real Redis broker (set REDIS_URL)")
    from celery.contrib.testing.worker import start_worker

    from mgecache_site.celery import app

    queue = f"mgecache-test-{uuid.uuid4().hex[:12]}"
    app.conf.task_always_eager = False
    with start_worker(app, pool="solo", perform_ping_check=False, queues=[queue], shutdown_timeout=30):
        yield queue
    app.conf.task_always_eager = True


@pytest.fixture
def llm_stub_server():
    """A stub Anthropic/OpenAI HTTP server on 127.0.0.1 (see tests/stub_llm_server.py)."""
    from tests.stub_llm_server import StubLLMServer

    server = StubLLMServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _close_orm_thread_connections():
    """The shared ORM thread (cache_app.core.dbread) keeps a connection; close it so the test DB can be dropped."""
    yield
    from cache_app.core.dbread import close_thread_connections

    close_thread_connections()


@pytest.fixture
def seeded_defaults(django_db_blocker):
    """Re-seed the default policies and prices (idempotent).

    Transactional tests (``transaction=True``) flush every table when they end, including
    the rows migration 0002 seeded; a transactional test that relies on them asks for this.
    """
    from importlib import import_module

    from django.apps import apps

    seed = import_module("cache_app.migrations.0002_seed_defaults").seed
    with django_db_blocker.unblock():
        seed(apps, None)
