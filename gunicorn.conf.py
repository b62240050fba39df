"""gunicorn settings used by `make run` and production (`gunicorn -c gunicorn.conf.py ...`).

With several workers, Prometheus metrics are aggregated across processes when
PROMETHEUS_MULTIPROC_DIR points at an empty, writable directory (docs/operations.md).
"""

import gc
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
accesslog = "-"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    # Embedded quickstart only (no broker, so no Celery beat): the worker takes the console's minute snapshots.
    from cache_app.console.scheduler import start_embedded_snapshots

    start_embedded_snapshots()
    # Everything loaded by now (Django, the apps, numpy, faiss) lives as long as the worker.
    # Frozen, the cyclic collector no longer re-scans it: a full collection of a warm worker
    # (~350k objects) stalled every request in flight for ~190 ms; after the freeze it scans
    # only what requests created since.
    gc.collect()
    gc.freeze()
