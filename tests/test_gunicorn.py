"""gunicorn.conf.py: how a worker takes connections, checked on a real gunicorn."""

from __future__ import annotations

import os
import runpy
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest

from tests.cluster.conftest import wait_for
from tests.conftest import ROOT, free_port

# A WSGI app whose /hold requests stay in their handler until the test lets them go: each one
# connects to the test's gate socket (so the test knows it entered) and waits for it to close.
HOLDING_APP = """
import os, socket

def application(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        with socket.create_connection(("127.0.0.1", int(os.environ["GATE_PORT"]))) as gate:
            gate.recv(1)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"GUNICORN_THREADS": "6"}, 6),  # no keep-alive: a worker holds only what its threads serve
        ({"GUNICORN_THREADS": "6", "GUNICORN_KEEPALIVE": "5"}, 1000),  # room for idle connections
        ({"GUNICORN_THREADS": "6", "GUNICORN_WORKER_CONNECTIONS": "40"}, 40),
    ],
)
def test_a_gunicorn_worker_accepts_no_more_connections_than_it_can_serve(monkeypatch, env, expected):
    for name in ("GUNICORN_THREADS", "GUNICORN_KEEPALIVE", "GUNICORN_WORKER_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert runpy.run_path(str(ROOT / "gunicorn.conf.py"))["worker_connections"] == expected


def test_a_gunicorn_worker_freezes_what_it_loaded(monkeypatch):
    import gc

    from cache_app.console import scheduler

    config = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    monkeypatch.setattr(scheduler, "start_embedded_snapshots", lambda: None)
    gc.unfreeze()
    try:
        config["post_worker_init"](None)
        assert gc.get_freeze_count() > 10_000  # Django and the apps: spared by every later collection
    finally:
        gc.unfreeze()


def test_a_request_waits_for_any_free_thread_not_behind_a_busy_worker(tmp_path):
    """2 workers x 2 threads, 3 requests held: the third must reach the worker with a free thread.

    With gunicorn's default of 1,000 connections a worker whose threads are both held may accept the
    third request anyway and queue it inside itself, where it would wait for a held one to finish.
    """
    (tmp_path / "holding_app.py").write_text(HOLDING_APP)
    gate = socket.create_server(("127.0.0.1", 0))
    gate.settimeout(30)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "PROMETHEUS_"))},
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "2",
        "GATE_PORT": str(gate.getsockname()[1]),
        "DJANGO_SETTINGS_MODULE": "mgecache_site.settings",
        "MGECACHE_IGNORE_DOTENV": "1",
        "DJANGO_DEBUG": "true",
        "CELERY_BROKER_URL": "memory://",  # no embedded snapshot thread in the workers
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--chdir", str(tmp_path)]
    server = subprocess.Popen(
        [*command, "holding_app:application"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    held: list[socket.socket] = []
    answers: list[str] = []
    holders: list[threading.Thread] = []
    try:
        wait_for(lambda: _answer_unless_exited(server, base), "gunicorn")  # OSError: not up yet
        for _ in range(3):
            holder = threading.Thread(target=lambda: answers.append(_get(f"{base}/hold")))
            holder.start()
            holders.append(holder)
            held.append(gate.accept()[0])  # this request entered a handler
        _get(f"{base}/")  # answered while three are held: the one free thread took it
    finally:
        for connection in held:
            connection.close()
        gate.close()  # a request still queued now fails at once instead of holding the shutdown
        server.terminate()
        try:
            _, stderr = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()
    for holder in holders:
        holder.join(timeout=30)
    assert len(answers) == 3, stderr.decode()[-2000:]
    assert len(set(answers)) == 2  # the held requests were spread over both workers


def _answer_unless_exited(server: subprocess.Popen, base: str) -> str:
    assert server.poll() is None, f"gunicorn exited: {server.stderr.read().decode()[-2000:] if server.stderr else ''}"
    return _get(f"{base}/")
