"""gunicorn settings used by `make run` and production (`gunicorn -c gunicorn.conf.py ...`).

With several workers, Prometheus metrics are aggregated across processes when
PROMETHEUS_MULTIPROC_DIR points at an empty, writable directory (docs/operations.md).
"""

import gc
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# No keep-alive by default: the workers share one listening socket, and a threaded worker keeps
# every connection it accepted, so a client's persistent connections (the pipeline's HTTP pool, a
# proxy's upstream pool) pile onto one worker while the others idle (measured: one worker at 97 %
# of a core, the other idle, half the throughput; gunicorn issues #2817, #3433). A connection per
# request is accepted by a free worker; on loopback or behind a proxy it costs ~0.1 ms.
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "0"))
# Without keep-alive a worker takes no more connections than it has threads: the rest wait in the
# kernel's backlog for whichever worker frees a thread first, not inside a worker whose threads are
# all held by slow misses (load test at 16 users: cached-hit p99 78-88 ms -> 49-69 ms). Keep-alive
# needs room for idle connections above the threads, so it keeps gunicorn's default.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS") or (1000 if keepalive else threads))
accesslog = "-"
# The heartbeat file each worker touches on every loop turn: on a disk-backed /tmp that is a
# journaled metadata write per request (4 % of a hit's CPU measured); gunicorn's docs advise tmpfs.
# Not writable (a non-root container user, a read-only mount): gunicorn's default (TMPDIR, /tmp).
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or (
    "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
)
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
