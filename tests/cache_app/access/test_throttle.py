"""DRF scoped throttles, per API key, on the shared cache: over a rate, 429 with Retry-After."""

import uuid

import pytest
from redis import exceptions as redis_exceptions

from cache_app.access import throttles
from cache_app.access.throttles import CounterRateThrottle
from cache_app.core import keys

pytestmark = pytest.mark.django_db

MP = str(uuid.UUID("55555555-5555-4555-8555-555555555555"))


@pytest.fixture
def tight_rates(settings):
    settings.MGECACHE = {
        **settings.MGECACHE,
        "THROTTLE_RATES": {"generate": "3/minute", "read": "2/minute", "invalidate": "1/minute"},
    }


def _statistics(client):
    return client.get("/api/v2/cache/statistics", {"masterplan_id": MP})


def test_reads_over_the_rate_get_429_with_retry_after(make_caller, tight_rates):
    caller = make_caller("pipeline")
    assert [_statistics(caller).status_code for _ in range(2)] == [200, 200]
    refused = _statistics(caller)
    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/json"
    assert 0 < int(refused["Retry-After"]) <= 60
    assert refused.json()["code"] == "throttled"
    # Counted per key: another key of the same role is not held back.
    assert _statistics(make_caller("pipeline")).status_code == 200


def test_scopes_are_counted_separately(make_caller, tight_rates):
    caller = make_caller("admin")
    for _ in range(2):
        assert _statistics(caller).status_code == 200
    assert _statistics(caller).status_code == 429
    body = {"prompt": "throttle", "temperature": 0}
    generate = [caller.post("/api/v2/llm/generate", body, format="json").status_code for _ in range(4)]
    assert generate == [200] * 3 + [429]
    invalidate = {"masterplan_id": MP}
    assert caller.post("/api/v2/cache/invalidate", invalidate, format="json").status_code == 202
    assert caller.post("/api/v2/cache/invalidate", invalidate, format="json").status_code == 429
    # Operator changes share the invalidate rate.
    assert caller.patch("/api/v2/batching/policy", {"notes": "x"}, format="json").status_code == 429


def test_wave_posts_share_the_generate_rate_and_wave_reads_the_read_rate(make_caller, tight_rates):
    caller = make_caller("pipeline")
    body = {"masterplan_id": MP, "atoms": [{"atom_id": str(uuid.uuid4()), "prompt": "throttle"}]}
    posts = [caller.post("/api/v2/llm/waves?wait=false", body, format="json") for _ in range(4)]
    assert [p.status_code for p in posts] == [202] * 3 + [429]
    wave_id = posts[0].json()["wave_id"]
    reads = [caller.get(f"/api/v2/llm/waves/{wave_id}").status_code for _ in range(3)]
    assert reads == [200, 200, 429]


# --- the sliding-window counter itself (a fake clock; real Redis in CI) -------------------------

WINDOW_START = 60.0 * 1_000_000  # a window boundary for a "60/minute"-style duration


class Counted(CounterRateThrottle):
    scope = "unit"
    rate = "10/minute"

    def __init__(self, clock) -> None:
        self.timer = clock
        super().__init__()

    def ident(self, request, view):
        return request


def test_a_full_window_refuses_and_says_how_long(clock):
    clock.now = WINDOW_START + 10
    throttle = Counted(clock)
    assert [throttle.allow_request("a", None) for _ in range(11)] == [True] * 10 + [False]
    # The window alone is full: 50 s until it becomes the previous one, which then weighs 10 * 1.0.
    assert throttle.wait() == pytest.approx(50.0)
    assert Counted(clock).allow_request("b", None)  # another caller has its own count


def test_the_previous_window_counts_by_its_overlap(clock):
    clock.now = WINDOW_START + 50
    throttle = Counted(clock)
    assert all(throttle.allow_request("a", None) for _ in range(10))
    clock.advance(25)  # 15 s into the next window: the previous one still weighs 0.75 * 10 = 7.5
    assert [throttle.allow_request("a", None) for _ in range(4)] == [True, True, True, False]
    # 7.5 + 3 >= 10 until the previous window's weight drops to 0.7, 3 s from now.
    assert throttle.wait() == pytest.approx(3.0)
    clock.advance(3.01)
    assert throttle.allow_request("a", None)


def test_a_window_is_one_small_counter_whatever_the_rate(clock, redis):
    clock.now = WINDOW_START + 1
    throttle = Counted(clock)
    for _ in range(7):
        throttle.allow_request("a", None)
    counter = keys.throttle("unit", "a", int(WINDOW_START // 60))
    assert redis.get(counter) == b"7"
    assert 0 < redis.pttl(counter) <= 120_000


def test_a_redis_outage_lets_requests_through(clock, monkeypatch):
    def unavailable(alias):
        raise redis_exceptions.ConnectionError("down")

    monkeypatch.setattr(throttles, "get_redis_connection", unavailable)
    assert all(Counted(clock).allow_request("a", None) for _ in range(20))


def test_an_address_from_a_header_is_hashed_into_the_key():
    key = keys.throttle("read", "ip:1.2.3.4,{evil}", 7)
    assert "evil" not in key
    assert key.count("{") == 1
    assert key.endswith("}:7")
    assert keys.throttle("read", "key:AbC123", 7).endswith("throttle:{read:key:AbC123}:7")
