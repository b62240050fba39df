"""/metrics needs its bearer token; /healthz says up/down to anyone, details to operators, fast and cached."""

import threading

import pytest
import redis as redis_lib

from cache_app import health
from cache_app.health import Check, HealthProbe

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("configured", "sent", "status"),
    [
        ("s3cret-metrics-token", None, 401),
        ("s3cret-metrics-token", "Bearer wrong-token", 403),
        ("s3cret-metrics-token", "Basic s3cret-metrics-token", 401),
        ("", "Bearer ", 401),
        ("", "Bearer anything", 403),  # no token configured: closed, whatever is sent
        ("s3cret-metrics-token", "Bearer s3cret-metrics-token", 200),
    ],
)
def test_metrics_need_the_configured_bearer_token(client, settings, configured, sent, status):
    settings.METRICS_TOKEN = configured
    headers = {} if sent is None else {"HTTP_AUTHORIZATION": sent}
    response = client.get("/metrics", **headers)
    assert response.status_code == status
    if status == 200:
        assert b"mgecache_" in response.content or b"django_http" in response.content
    else:
        assert response["Content-Type"] == "application/json"
        assert b"mgecache_llm_spend" not in response.content


def test_healthz_tells_anonymous_callers_only_up_or_down(client, monkeypatch, blackhole_port):
    assert client.get("/healthz").json() == {"status": "ok"}
    dead = redis_lib.Redis(host="127.0.0.1", port=blackhole_port, socket_timeout=0.1, socket_connect_timeout=0.1)
    monkeypatch.setattr(health, "get_redis", lambda: dead)
    health.get_probe.reset()  # drop the cached answer
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable"}


def test_healthz_details_for_operators_carry_no_addresses(make_caller, monkeypatch, blackhole_port):
    dead = redis_lib.Redis(host="127.0.0.1", port=blackhole_port, socket_timeout=0.1, socket_connect_timeout=0.1)
    monkeypatch.setattr(health, "get_redis", lambda: dead)
    response = make_caller("operator").get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["redis"]
    assert body["checks"]["redis"]["detail"].startswith(("error: ", "timeout: "))
    assert "127.0.0.1" not in response.content.decode()
    assert str(blackhole_port) not in response.content.decode()
    assert "checks" not in make_caller("pipeline").get("/healthz").json()


def test_a_hung_dependency_makes_the_probe_answer_down_not_wait():
    release = threading.Event()
    calls = {"hung": 0}

    def hung() -> Check:
        calls["hung"] += 1
        release.wait()  # hangs until the test ends
        return Check("hung", True, "ok")

    probe = HealthProbe({"hung": hung, "fine": lambda: Check("fine", True, "ok")}, timeout=0.5, cache_seconds=0)
    try:
        first = {c.name: c for c in probe.results()}
        assert first["fine"].ok
        assert not first["hung"].ok
        assert first["hung"].detail.startswith("timeout")
        second = {c.name: c for c in probe.results()}
        assert not second["hung"].ok
        assert calls["hung"] == 1  # still running: not started again, threads do not pile up
    finally:
        release.set()


def test_the_probe_reuses_its_answer_within_the_cache_period(clock):
    calls = []

    def counted() -> Check:
        calls.append(1)
        return Check("db", True, "ok")

    probe = HealthProbe({"db": counted}, timeout=1, cache_seconds=1.0, clock=clock)
    probe.results()
    clock.advance(0.9)
    probe.results()
    assert len(calls) == 1
    clock.advance(0.2)
    probe.results()
    assert len(calls) == 2


def test_schema_and_docs_need_a_login(client, make_caller):
    for path in ("/api/schema/", "/api/docs/"):
        response = client.get(path)
        assert response.status_code == 401
        assert response["Content-Type"] == "application/json"
        assert make_caller("pipeline").get(path).status_code == 200
