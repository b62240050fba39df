"""Celery options every cache task shares.

Cache tasks delete dead keys: doing it twice is harmless (UNLINK of a missing key is a no-op),
so acks_late redelivery and retries are safe. Redis errors are retried with exponential backoff.
"""

from __future__ import annotations

from typing import Any

import redis

TASK_RETRY: dict[str, Any] = {
    "acks_late": True,
    "autoretry_for": (redis.RedisError, OSError),
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 6,
}
