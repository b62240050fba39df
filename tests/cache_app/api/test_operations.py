"""Statistics, invalidations, masterplans and policies through /api/v2/."""

import uuid

import numpy as np
import pytest

from cache_app.core.redis_client import get_breaker
from cache_app.llm.cache import LLMPromptCache
from cache_app.models import BatchPolicy, CachePolicy, InvalidationAudit, Masterplan, PolicyChangeAudit
from cache_app.rag.cache import RAGQueryCache

pytestmark = pytest.mark.django_db

MP_X = uuid.UUID("11111111-1111-4111-8111-111111111111")
MP_Y = uuid.UUID("22222222-2222-4222-8222-222222222222")
VEC = np.linspace(0.1, 1.0, 16, dtype=np.float32)
STATISTICS = "/api/v2/cache/statistics"
INVALIDATE = "/api/v2/cache/invalidate"


def _fill(masterplan_id):
    LLMPromptCache().set(
        "write a parser", "claude-3-5-sonnet", 0.0, "def parse(): ...", prompt_tokens=10, completion_tokens=5,
        masterplan_id=masterplan_id,
    )  # fmt: skip
    RAGQueryCache().set(
        "how to parse", VEC, [{"content": "doc"}], embedding_model="m", top_k=3, masterplan_id=masterplan_id
    )


def _cached(masterplan_id) -> tuple[bool, bool]:
    llm = LLMPromptCache().get("write a parser", "claude-3-5-sonnet", 0.0, masterplan_id=masterplan_id)
    rag = RAGQueryCache().get("how to parse", VEC, embedding_model="m", top_k=3, masterplan_id=masterplan_id)
    return llm is not None, rag is not None


# --- statistics --------------------------------------------------------------------------------


def test_statistics_keep_the_original_shape_and_reflect_hits_and_misses(api):
    _fill(MP_X)
    _cached(MP_X)  # 1 llm hit, 1 rag exact hit
    _cached(MP_Y)  # 1 llm miss, 1 rag miss
    body = api.get(STATISTICS).json()
    assert {"hit_rate", "total_hits", "total_misses", "cost_savings_usd"} <= set(body["llm_cache"])
    assert {"hit_rate", "total_hits", "total_misses"} <= set(body["rag_cache"])
    assert {"avg_batch_size", "total_requests_batched"} <= set(body["batching"])
    assert body["llm_provider_simulated"] is True  # the embedded default is labelled as simulated
    assert body["llm_cache"]["total_hits"] == 1
    assert body["llm_cache"]["total_misses"] == 1
    assert body["rag_cache"]["exact_hits"] == 1
    assert body["combined_hit_rate"] == pytest.approx(0.5)
    scoped = api.get(STATISTICS, {"masterplan_id": str(MP_Y)}).json()
    assert scoped["masterplan_id"] == str(MP_Y)
    assert scoped["llm_cache"]["total_hits"] == 0
    assert scoped["llm_cache"]["total_misses"] == 1


def test_layer_statistics_are_the_layers_section(api):
    _fill(MP_X)
    _cached(MP_X)
    whole = api.get(STATISTICS, {"masterplan_id": str(MP_X)}).json()
    for layer, section in (("llm", "llm_cache"), ("rag", "rag_cache"), ("batching", "batching")):
        body = api.get(f"{STATISTICS}/{layer}", {"masterplan_id": str(MP_X)}).json()
        assert body == {"layer": layer, "masterplan_id": str(MP_X), **whole[section]}
    assert api.get(f"{STATISTICS}/disk").status_code == 404


@pytest.mark.parametrize("value", ["not-a-uuid", "", "11111111111141118111111111111111"])
def test_statistics_reject_a_bad_masterplan_id(api, value):
    response = api.get(STATISTICS, {"masterplan_id": value})
    assert response.status_code == 400
    assert "masterplan_id" in response.json()


def test_the_global_statistics_are_for_operators(make_caller):
    pipeline = make_caller("pipeline")
    assert pipeline.get(STATISTICS).status_code == 403
    assert pipeline.get(STATISTICS, {"masterplan_id": str(MP_X)}).status_code == 200
    assert make_caller("operator").get(f"{STATISTICS}/llm").status_code == 200


# --- invalidation ------------------------------------------------------------------------------


def test_invalidate_a_masterplan_is_a_followable_operation(api, admin_user, django_capture_on_commit_callbacks):
    _fill(MP_X)
    _fill(MP_Y)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(INVALIDATE, {"masterplan_id": str(MP_X)}, format="json")
    assert response.status_code == 202, response.content
    accepted = response.json()
    assert (accepted["status"], accepted["masterplan_id"], accepted["layers"]) == ("pending", str(MP_X), ["llm", "rag"])
    assert accepted["source"] == "api"
    assert accepted["actor"] == admin_user.username
    assert _cached(MP_X) == (False, False)
    assert _cached(MP_Y) == (True, True)
    done = api.get(f"/api/v2/cache/invalidations/{accepted['id']}").json()
    assert done["status"] == "succeeded"
    assert done["removed_by_layer"] == {"llm": 1, "rag": 1}
    assert done["keys_removed"] == 2
    assert Masterplan.objects.filter(pk=MP_X).exists()  # registered on the way


def test_invalidate_one_layer_of_every_masterplan(api, django_capture_on_commit_callbacks):
    _fill(MP_X)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(INVALIDATE, {"all_masterplans": True, "layers": ["llm"]}, format="json")
    assert response.status_code == 202
    assert response.json()["masterplan_id"] is None
    assert _cached(MP_X) == (False, True)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"layers": ["llm"]},
        {"all_masterplans": False},
        {"masterplan_id": str(MP_X), "all_masterplans": True},
        {"masterplan_id": None, "all_masterplans": True},
        {"masterplan_id": str(MP_X), "layers": ["llm", "disk"]},
        {"masterplan_id": str(MP_X), "layers": []},
        {"masterplan_id": str(MP_X), "layers": "all"},
        {"masterplan_id": str(MP_X), "confirm": True},
    ],
)
def test_invalidate_refuses_what_the_schema_refuses(api, body):
    _fill(MP_X)
    response = api.post(INVALIDATE, body, format="json")
    assert response.status_code == 400, response.content
    assert _cached(MP_X) == (True, True)
    assert not InvalidationAudit.objects.exists()


def test_invalidate_idempotency_key_records_one_operation(api, django_capture_on_commit_callbacks):
    headers = {"HTTP_IDEMPOTENCY_KEY": "inv-1"}
    with django_capture_on_commit_callbacks(execute=True):
        first = api.post(INVALIDATE, {"masterplan_id": str(MP_X)}, format="json", **headers)
        again = api.post(INVALIDATE, {"masterplan_id": str(MP_X)}, format="json", **headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert InvalidationAudit.objects.count() == 1
    other = api.post(INVALIDATE, {"masterplan_id": str(MP_Y)}, format="json", **headers)
    assert other.status_code == 422


def test_invalidation_unknown_is_404(api):
    assert api.get(f"/api/v2/cache/invalidations/{uuid.uuid4()}").status_code == 404
    assert api.get("/api/v2/cache/invalidations/not-a-uuid").status_code == 404


def test_an_invalidation_that_cannot_reach_redis_ends_failed_with_its_error(api, django_capture_on_commit_callbacks):
    get_breaker().record_failure()  # the breaker is open: Redis counts as down
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(INVALIDATE, {"masterplan_id": str(MP_X)}, format="json")
    assert response.status_code == 202
    done = api.get(f"/api/v2/cache/invalidations/{response.json()['id']}").json()
    assert done["status"] == "failed"
    assert "Unavailable" in done["error"]


# --- masterplans -------------------------------------------------------------------------------


def test_masterplans_are_listed_a_bounded_page_at_a_time(api):
    for i in range(3):
        Masterplan.objects.create(id=uuid.UUID(int=i + 1), name=f"plan {i}")
    page = api.get("/api/v2/masterplans", {"limit": 2}).json()
    assert (page["count"], page["limit"], page["offset"]) == (3, 2, 0)
    assert len(page["results"]) == 2
    rest = api.get("/api/v2/masterplans", {"limit": 2, "offset": 2}).json()
    assert len(rest["results"]) == 1
    seen = {m["id"] for m in page["results"] + rest["results"]}
    assert seen == {str(uuid.UUID(int=i + 1)) for i in range(3)}
    assert set(page["results"][0]["statistics"]) == {"llm", "rag", "batching"}
    for query in ({"limit": 51}, {"limit": 0}, {"limit": "1.0"}, {"offset": -1}):
        assert api.get("/api/v2/masterplans", query).status_code == 400, query


def test_a_masterplan_with_its_figures_renamed_and_its_status_set(api):
    Masterplan.objects.create(id=MP_X, name=str(MP_X))
    _fill(MP_X)
    _cached(MP_X)
    url = f"/api/v2/masterplans/{MP_X}"
    body = api.get(url).json()
    assert body["name"] == str(MP_X)
    assert body["statistics"]["llm"]["total_hits"] == 1
    changed = api.patch(url, {"name": "Checkout service", "status": "running"}, format="json")
    assert changed.status_code == 200, changed.content
    assert (changed.json()["name"], changed.json()["status"]) == ("Checkout service", "running")
    assert Masterplan.objects.get(pk=MP_X).name == "Checkout service"
    for bad in ({"name": " "}, {"name": "x" * 201}, {"status": "done"}, {"id": str(MP_Y)}, {"name": 5}):
        assert api.patch(url, bad, format="json").status_code == 400, bad
    assert api.get(f"/api/v2/masterplans/{MP_Y}").status_code == 404
    assert api.patch(f"/api/v2/masterplans/{MP_Y}", {"name": "n"}, format="json").status_code == 404


def test_restricted_keys_see_only_their_masterplans(make_caller):
    Masterplan.objects.create(id=MP_Y, name="theirs")
    mine = make_caller("pipeline", masterplans=[MP_X])
    page = mine.get("/api/v2/masterplans").json()
    assert [m["id"] for m in page["results"]] == [str(MP_X)]
    assert mine.get(f"/api/v2/masterplans/{MP_Y}").status_code == 403
    assert mine.patch(f"/api/v2/masterplans/{MP_X}", {"name": "n"}, format="json").status_code == 403


# --- policies ----------------------------------------------------------------------------------


def test_cache_policy_read_and_tuned_with_an_audit_record(api, admin_user):
    url = "/api/v2/cache/policies/rag"
    assert api.get(url).json()["similarity_threshold"] == pytest.approx(0.95)
    response = api.patch(url, {"similarity_threshold": 0.9, "ttl_seconds": 7200}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["policy"]["similarity_threshold"], body["policy"]["ttl_seconds"]) == (0.9, 7200)
    assert body["change"]["old_values"] == {"similarity_threshold": 0.95, "ttl_seconds": 3600}
    assert CachePolicy.objects.get(layer="rag").ttl_seconds == 7200
    audit = PolicyChangeAudit.objects.get()
    assert (audit.source, audit.actor, audit.target) == ("api", admin_user, "rag")
    unchanged = api.patch(url, {"ttl_seconds": 7200}, format="json").json()
    assert unchanged["change"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"ttl_seconds": 7200.5},
        {"ttl_seconds": 7200.0},
        {"ttl_seconds": "7200"},
        {"ttl_seconds": 0},
        {"ttl_seconds": 30 * 24 * 3600 + 1},
        {"similarity_threshold": 0.4},
        {"enabled": "false"},
        {"notes": "a\x00b"},
        {"max_batch_size": 3},
    ],
)
def test_cache_policy_type_checks_before_the_model_converts(api, body):
    response = api.patch("/api/v2/cache/policies/llm", body, format="json")
    assert response.status_code == 400, response.content
    assert CachePolicy.objects.get(layer="llm").ttl_seconds == 86400
    assert not PolicyChangeAudit.objects.exists()


def test_batching_policy_read_and_tuned(api):
    url = "/api/v2/batching/policy"
    assert api.get(url).json()["max_batch_size"] == 5
    response = api.patch(url, {"max_batch_size": 8, "batch_window_ms": 50}, format="json")
    assert response.status_code == 200, response.content
    assert BatchPolicy.objects.get(pk=1).max_batch_size == 8
    for bad in ({"max_batch_size": 51}, {"batch_window_ms": 0}, {"ttl_seconds": 5}):
        assert api.patch(url, bad, format="json").status_code == 400, bad
    assert api.get("/api/v2/cache/policies/batching").status_code == 404


def test_policies_are_for_operators(make_caller):
    pipeline = make_caller("pipeline")
    assert pipeline.get("/api/v2/cache/policies/llm").status_code == 403
    assert pipeline.patch("/api/v2/batching/policy", {"enabled": False}, format="json").status_code == 403
    assert (
        make_caller("operator").patch("/api/v2/batching/policy", {"enabled": False}, format="json").status_code == 200
    )
