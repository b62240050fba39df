"""Errors are JSON on every API route: 404, 500, provider 502/504, and 503 with Redis or Postgres stopped."""

import json
import socket
import threading
import uuid

import pytest
import redis
from django.conf import settings as django_settings

from tests.conftest import free_port, run_python

MP = uuid.UUID("12121212-1212-4212-8212-121212121212")


@pytest.mark.django_db
def test_unknown_api_paths_are_json_404s(client, make_caller):
    for caller in (client, make_caller("pipeline")):
        response = caller.get("/api/no/such/route/")
        assert response.status_code == 404
        assert response["Content-Type"] == "application/json"
        assert response.json()["code"] == "not_found"
    assert client.get("/not-an-api-path/")["Content-Type"].startswith("text/html")  # elsewhere, Django's page


@pytest.mark.django_db
def test_an_unexpected_error_is_a_json_500_without_details(make_caller, monkeypatch):
    from cache_app.api import statistics

    def broken(masterplan_id):
        raise RuntimeError("secret internals at 10.0.0.7:5432")

    monkeypatch.setattr(statistics, "cache_statistics", broken)
    caller = make_caller("operator")
    caller.raise_request_exception = False
    response = caller.get("/api/v2/cache/statistics")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error.", "code": "server_error"}
    assert b"10.0.0.7" not in response.content


@pytest.mark.django_db
def test_wrong_method_and_media_type_are_json(make_caller):
    caller = make_caller("pipeline")
    response = caller.put("/api/v2/llm/generate", {"prompt": "x"}, format="json")
    assert (response.status_code, response["Content-Type"]) == (405, "application/json")
    response = caller.post("/api/v2/llm/generate", "prompt=x", content_type="application/x-www-form-urlencoded")
    assert (response.status_code, response["Content-Type"]) == (415, "application/json")


@pytest.fixture
def anthropic_stub(settings, llm_stub_server):
    settings.ANTHROPIC_API_KEY = "test-key"
    settings.ANTHROPIC_BASE_URL = llm_stub_server.url
    settings.MGECACHE = {**settings.MGECACHE, "LLM_PROVIDER": "anthropic", "LLM_MAX_RETRIES": 0}
    return llm_stub_server


@pytest.mark.django_db
def test_a_provider_error_is_a_502(make_caller, anthropic_stub):
    anthropic_stub.fail_next(500, times=5)
    response = make_caller("pipeline").post("/api/v2/llm/generate", {"prompt": "x", "temperature": 0}, format="json")
    assert response.status_code == 502
    assert response.json()["code"] == "bad_gateway"
    assert anthropic_stub.url.encode() not in response.content


@pytest.mark.django_db
def test_a_provider_timeout_is_a_504(make_caller, anthropic_stub, settings):
    settings.MGECACHE = {**settings.MGECACHE, "LLM_TIMEOUT_SECONDS": 0.2}
    anthropic_stub.gate = threading.Event()  # the stub holds every answer
    try:
        response = make_caller("pipeline").post(
            "/api/v2/llm/generate", {"prompt": "x", "temperature": 0}, format="json"
        )
    finally:
        anthropic_stub.gate.set()
    assert response.status_code == 504
    assert response.json()["code"] == "gateway_timeout"


def test_a_broker_publish_inside_a_request_is_bounded():
    """Socket timeouts and retries of a publish add up to less than 2 s (a refused connection fails at once)."""
    from mgecache_site.celery import app

    options = app.conf.broker_transport_options
    attempts = 1 + app.conf.task_publish_retry_policy["max_retries"]
    intervals = app.conf.task_publish_retry_policy["interval_max"] * (attempts - 1)
    assert options["socket_connect_timeout"] <= options["socket_timeout"]
    assert attempts * options["socket_timeout"] + intervals < 2.0
    backend_retries = django_settings.CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS["retry_policy"]["max_retries"]
    assert backend_retries <= 2


# --- real services stopped: the server side runs in a subprocess --------------------------------

REQUESTS_SCRIPT = """
import json, os
from django.test import Client
authed = Client(raise_request_exception=False, HTTP_AUTHORIZATION="Bearer " + os.environ["TEST_KEY"])
anonymous = Client(raise_request_exception=False)
out = []
for who, method, path, body, headers in json.loads(os.environ["TEST_REQUESTS"]):
    client = authed if who == "key" else anonymous
    if method == "GET":
        r = client.get(path)
    else:
        r = client.post(path, json.dumps(body), content_type="application/json", headers=headers)
    out.append({"status": r.status_code, "type": r.get("Content-Type"), "retry_after": r.get("Retry-After"),
                "body": r.content.decode(errors="replace")[:4000]})
print("RESULT " + json.dumps(out))
"""


def _serve(env: dict, key: str, requests: list) -> list[dict]:
    """Each request is (who, method, path, body[, headers]), answered by a fresh process."""
    requests = [(*r, {}) if len(r) == 4 else r for r in requests]
    proc = run_python(REQUESTS_SCRIPT, {**env, "TEST_KEY": key, "TEST_REQUESTS": json.dumps(requests)})
    [line] = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def _assert_json_503(result: dict) -> None:
    assert result["status"] == 503, result
    assert result["type"] == "application/json", result
    assert int(result["retry_after"]) > 0, result
    assert "127.0.0.1" not in result["body"], result


def _wave(atom: str) -> dict:
    return {"atoms": [{"atom_id": atom, "prompt": "outage"}], "masterplan_id": str(MP)}


WAVES = "/api/v2/llm/waves?wait=false"
INVALIDATE = "/api/v2/cache/invalidate"


@pytest.mark.django_db(transaction=True)
@pytest.mark.redis_server
def test_json_503_with_retry_after_when_redis_is_stopped(private_redis, subprocess_env, make_caller, seeded_defaults):
    caller = make_caller("admin")  # committed: the subprocess reads it from the test database
    env = {**subprocess_env, "REDIS_URL": private_redis.url}
    env.pop("CELERY_BROKER_URL", None)  # the broker follows REDIS_URL: the private server, db 1

    # Redis up: a wave is accepted (queued on the private broker) and readable.
    up = _serve(env, caller.key, [("key", "POST", WAVES, _wave(str(uuid.uuid4())))])
    assert up[0]["status"] == 202, up
    wave_id = json.loads(up[0]["body"])["wave_id"]
    assert _serve(env, caller.key, [("key", "GET", f"/api/v2/llm/waves/{wave_id}", None)])[0]["status"] == 200

    private_redis.stop()
    down = _serve(
        env,
        caller.key,
        [
            ("key", "GET", f"/api/v2/llm/waves/{wave_id}", None),
            ("key", "POST", WAVES, _wave(str(uuid.uuid4()))),
            ("key", "POST", INVALIDATE, {"masterplan_id": str(MP)}, {"Idempotency-Key": "outage"}),
        ],
    )
    for result in down:
        _assert_json_503(result)
    assert "Redis" in down[0]["body"]
    health = _serve(env, caller.key, [("anonymous", "GET", "/healthz", None)])[0]
    assert (health["status"], json.loads(health["body"])) == (503, {"status": "unavailable"})


@pytest.mark.django_db(transaction=True)
@pytest.mark.redis_server
def test_with_the_broker_down_a_json_503_and_the_records_say_why(
    private_redis, subprocess_env, make_caller, seeded_defaults
):
    from cache_app.models import InvalidationAudit

    caller = make_caller("admin")
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {**subprocess_env, "REDIS_URL": private_redis.url, "CELERY_BROKER_URL": dead_broker}
    wave, invalidation = _serve(
        env,
        caller.key,
        [("key", "POST", WAVES, _wave(str(uuid.uuid4()))), ("key", "POST", INVALIDATE, {"masterplan_id": str(MP)})],
    )
    # Nothing could start: the caller is told to retry (JSON 503, Retry-After, no address).
    _assert_json_503(wave)
    _assert_json_503(invalidation)
    assert "broker" in wave["body"]
    assert "broker" in invalidation["body"]
    # Nothing is lost silently: the invalidation row is failed, with the reason.
    recorded = InvalidationAudit.objects.get(masterplan_id=MP)
    assert recorded.status == InvalidationAudit.Status.FAILED
    assert recorded.error.startswith("could not start")
    # ... and so is the wave's atom, in its record in the private Redis.
    client = redis.Redis.from_url(private_redis.url)
    [wave_key] = client.scan_iter(match="*:wave:*")
    assert b"batch not run" in b" ".join(client.hvals(wave_key))


class TCPProxy:
    """A TCP proxy on a free local port to a real server, which the test can cut."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Postgres is gone: no new connections, and the open ones are cut."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not)
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_json_503_with_retry_after_when_postgres_is_stopped(subprocess_env, make_caller, seeded_defaults):
    caller = make_caller("pipeline")
    db = django_settings.DATABASES["default"]
    proxy = TCPProxy((db.get("HOST") or "127.0.0.1", int(db.get("PORT") or 5432)))
    env = {**subprocess_env}
    env["DATABASE_URL"] = env["DATABASE_URL"].replace(f":{db.get('PORT') or 5432}/", f":{proxy.port}/")
    assert str(proxy.port) in env["DATABASE_URL"]
    requests = [
        ("key", "GET", f"/api/v2/cache/statistics?masterplan_id={MP}", None),
        ("key", "POST", "/api/v2/llm/generate", {"prompt": "db outage", "temperature": 0}),
    ]
    try:
        assert [r["status"] for r in _serve(env, caller.key, requests)] == [200, 200]
    finally:
        proxy.close()
    for result in _serve(env, caller.key, requests):
        _assert_json_503(result)
        assert "database" in result["body"]


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ClusterDownError,
        redis.exceptions.TryAgainError,
        redis.exceptions.SlotNotCoveredError,
        redis.exceptions.ReadOnlyError,
    ],
)
def test_a_cluster_mid_failover_is_a_503_not_a_500(error):
    from cache_app.access.errors import ServiceUnavailable, translate

    translated = translate(error("The cluster is down"))
    assert isinstance(translated, ServiceUnavailable)
    assert translated.wait > 0
