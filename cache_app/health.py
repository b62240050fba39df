"""Reachability checks for /healthz: the database, Redis and the Celery broker."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import connections

from cache_app.core import conf
from cache_app.core.redis_client import get_redis


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_database() -> Check:
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        return Check("database", True, connections["default"].vendor)
    except Exception as exc:
        return Check("database", False, f"{type(exc).__name__}: {exc}")


def check_redis() -> Check:
    try:
        get_redis().ping()
    except Exception as exc:
        return Check("redis", False, f"{type(exc).__name__}: {exc}")
    return Check("redis", True, "embedded (fakeredis, not for production)" if settings.REDIS_EMBEDDED else "ok")


def check_broker(timeout: int = 1) -> Check:
    if not settings.CELERY_BROKER_URL:
        return Check("broker", True, "none: tasks run in-process (embedded default)")
    from mgecache_site.celery import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        return Check("broker", False, f"{type(exc).__name__}: {exc}")
    return Check("broker", True, "ok")


def run_checks() -> tuple[bool, dict]:
    checks = [check_database(), check_redis(), check_broker()]
    ok = all(c.ok for c in checks)
    provider = conf.get("LLM_PROVIDER")
    body = {
        "status": "ok" if ok else "unavailable",
        "failed": [c.name for c in checks if not c.ok],
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
        "llm_provider": provider,
        "llm_provider_simulated": provider == "simulated",
    }
    return ok, body
