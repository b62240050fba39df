"""Snapshots without Celery beat: the embedded quickstart (``make run``) has no broker and no beat.

There the counters live in the web process's in-process Redis, so the web process itself
takes the minute snapshots, on a daemon thread started by ``gunicorn.conf.py``.
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections

logger = logging.getLogger(__name__)

INTERVAL_SECONDS = 60.0
CLEANUP_EVERY = 60  # snapshots


def run_snapshots(stop: threading.Event, *, interval: float = INTERVAL_SECONDS) -> None:
    """Take a snapshot every ``interval`` seconds until ``stop`` is set (and clean up once an hour)."""
    from cache_app.console.snapshots import cleanup_snapshots, take_snapshot

    taken = 0
    while not stop.wait(interval):
        try:
            take_snapshot()
            taken += 1
            if taken % CLEANUP_EVERY == 0:
                cleanup_snapshots()
        except Exception:  # keep the thread alive: the next minute may work
            logger.exception("statistics snapshot failed")
        finally:
            close_old_connections()


def start_embedded_snapshots() -> threading.Event | None:
    """Start the snapshot thread when tasks run in-process (no broker); returns its stop event."""
    from django.conf import settings

    if settings.CELERY_BROKER_URL:
        return None  # Celery beat takes them
    stop = threading.Event()
    threading.Thread(target=run_snapshots, args=(stop,), name="mgecache-snapshots", daemon=True).start()
    return stop
