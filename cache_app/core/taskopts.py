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


class BrokerUnavailableError(RuntimeError):
    """A task could not be sent: the broker (or its result store) did not answer within its bound."""


def send_task(task: Any, args: tuple[Any, ...], options: dict[str, Any]) -> None:
    """``task.apply_async`` with a broker failure as :class:`BrokerUnavailableError` (the API's 503).

    Eager runs (the embedded default: no broker) raise what the task raised, unchanged.
    """
    from django.conf import settings

    if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
        task.apply_async(args=args, **options)
        return
    try:
        task.apply_async(args=args, **options)
    except Exception as exc:  # kombu's OperationalError, or the result store's RuntimeError
        raise BrokerUnavailableError(f"{type(exc).__name__}: {exc}".strip()) from exc
