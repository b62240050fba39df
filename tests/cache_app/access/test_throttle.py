"""DRF scoped throttles, per API key, on the shared cache: over a rate, 429 with Retry-After."""

import uuid

import pytest

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
