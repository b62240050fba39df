"""Reachability checks for /healthz: the database, Redis and the Celery broker.

Each check runs in its own daemon thread with a deadline (``HEALTH_CHECK_TIMEOUT_SECONDS``),
so a hung dependency makes the answer "down", never slow; a check still running from an
earlier probe is not started again (at most one thread per dependency). The result is
reused for ``HEALTH_CACHE_SECONDS``. Details name the failing dependency and the error's
class only: no addresses, no messages.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connections

from cache_app.core import conf
from cache_app.core.redis_client import get_redis
from cache_app.core.state import process_wide


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _failed(name: str, exc: BaseException) -> Check:
    return Check(name, False, f"error: {type(exc).__name__}")


def check_database() -> Check:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return Check("database", True, connections["default"].vendor)
    except Exception as exc:
        return _failed("database", exc)
    finally:
        connections.close_all()  # this thread's connections: the check runs in a thread of its own


def check_redis() -> Check:
    try:
        get_redis().ping()
    except Exception as exc:
        return _failed("redis", exc)
    return Check("redis", True, "embedded (fakeredis, not for production)" if settings.REDIS_EMBEDDED else "ok")


def check_broker(timeout: float = 0.5) -> Check:
    if not settings.CELERY_BROKER_URL:
        return Check("broker", True, "none: tasks run in-process (embedded default)")
    from mgecache_site.celery import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)  # type: ignore[arg-type]  # kombu takes seconds
    except Exception as exc:
        return _failed("broker", exc)
    return Check("broker", True, "ok")


DEFAULT_CHECKS: dict[str, Callable[[], Check]] = {
    "database": lambda: check_database(),
    "redis": lambda: check_redis(),
    "broker": lambda: check_broker(),
}


class HealthProbe:
    """Runs the checks concurrently under one deadline and caches the outcome briefly."""

    def __init__(
        self,
        checks: Mapping[str, Callable[[], Check]] | None = None,
        *,
        timeout: float | None = None,
        cache_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks = dict(DEFAULT_CHECKS if checks is None else checks)
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._running: dict[str, Future] = {}
        self._cached: tuple[float, list[Check]] | None = None

    @property
    def timeout(self) -> float:
        return float(conf.get("HEALTH_CHECK_TIMEOUT_SECONDS") if self._timeout is None else self._timeout)

    @property
    def cache_seconds(self) -> float:
        return float(conf.get("HEALTH_CACHE_SECONDS") if self._cache_seconds is None else self._cache_seconds)

    def results(self) -> list[Check]:
        with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return self._cached[1]
            results = self._probe()
            self._cached = (self._clock(), results)
            return results

    def _probe(self) -> list[Check]:
        futures = {name: self._start(name, check) for name, check in self._checks.items()}
        wait_futures(futures.values(), timeout=self.timeout)
        results = []
        for name, future in futures.items():
            try:
                results.append(future.result(timeout=0))
            except FutureTimeout:
                results.append(Check(name, False, f"timeout: no answer within {self.timeout:g} s"))
            except Exception as exc:
                results.append(_failed(name, exc))
        return results

    def _start(self, name: str, check: Callable[[], Check]) -> Future:
        running = self._running.get(name)
        if running is not None and not running.done():
            return running  # still hung from an earlier probe: do not pile up threads
        future: Future = Future()

        def target() -> None:
            try:
                future.set_result(check())
            except BaseException as exc:
                future.set_exception(exc)

        threading.Thread(target=target, name=f"mgecache-health-{name}", daemon=True).start()
        self._running[name] = future
        return future


@process_wide
def get_probe() -> HealthProbe:
    return HealthProbe()


def run_checks(*, details: bool = True, probe: HealthProbe | None = None) -> tuple[bool, dict[str, Any]]:
    """(ok, body). Without ``details`` the body is only ``{"status": "ok" | "unavailable"}``."""
    checks = (probe or get_probe()).results()
    ok = all(c.ok for c in checks)
    body: dict[str, Any] = {"status": "ok" if ok else "unavailable"}
    if not details:
        return ok, body
    provider = conf.get("LLM_PROVIDER")
    body.update(
        {
            "failed": [c.name for c in checks if not c.ok],
            "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
            "llm_provider": provider,
            "llm_provider_simulated": provider == "simulated",
        }
    )
    return ok, body
